"""Import the authors' published test-set predictions into this project's tables.

Holste et al. released, for NIH-CXR-LT and MIMIC-CXR-LT, one pickled pandas DataFrame per
(seed s, sparsity k) of L1-pruned ResNet50s, in folders ``nih-cxr-lt_L1-prune_preds/`` and
``mimic-cxr-lt_L1-prune_preds/``::

    {dataset}_resnet50_seed-{s}_prune-{k}.pkl

``k`` is written as Python prints the float from ``np.arange(0, 100, 5) / 100`` (``0.05``,
``0.1``, ..., ``0.95``) and ``prune-0`` for k = 0. Columns: the class names (float32
probabilities) and ``label``, the image's true classes joined by ``|`` in the file's class
order; rows follow the order of the dataset's test label CSV.

:func:`import_predictions` checks every file against the test label CSV (row count, the
``label`` column row by row, the class columns, probabilities in [0, 1]) and that every
configured (seed, level) is present, then writes

- ``data/predictions/<name>/seed-<s>.parquet`` per seed, in the prune stage's contract
  (``image_id, method="l1", sparsity, <classes>`` in canonical class order, the test
  images in label-file order within each level block);
- ``data/prepared/<name>/``: ``labels_test.parquet`` (from the test CSV),
  ``labels_train.parquet`` (from the train CSV: the analyses relate forgetting to train
  counts), ``meta.json`` (with an ``imported`` record of the source files) and 1x1
  placeholder ``images_{train,test}.npy`` (the published predictions come without images;
  the stages that only need labels read them through :func:`cxrprune.datasets.prepare.load_split`).

so that the evaluate and analyze stages run on them unchanged. Pickles can run code when
loaded: import only files from a source you trust (the authors' release).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrprune.core.atomic import atomic_dir, write_json
from cxrprune.core.classes import MIMIC_CXR_LT_CLASSES, NIH_CXR_LT_CLASSES
from cxrprune.core.errors import DataError
from cxrprune.datasets.sources import (
    MIMIC_LABEL_FILE,
    NIH_LABEL_FILE,
    read_mimic_label_file,
    read_nih_label_file,
)

DATASETS = {
    "nih-cxr-lt": (NIH_CXR_LT_CLASSES, NIH_LABEL_FILE),
    "mimic-cxr-lt": (MIMIC_CXR_LT_CLASSES, MIMIC_LABEL_FILE),
}
METHOD = "l1"
LABEL_COLUMN = "label"
_SHOWN = 3
# Levels are compared after rounding, so 0.15 from params.yaml matches "prune-0.15".
_DECIMALS = 9


def pickle_name(dataset: str, seed: int, level: float) -> str:
    """The published file name of (seed, level): ``prune-0`` for 0, else Python's float repr."""
    k = "0" if level == 0 else repr(float(level))
    return f"{dataset}_resnet50_seed-{seed}_prune-{k}.pkl"


def _level_key(level: float) -> float:
    return round(float(level), _DECIMALS)


def find_pickles(folder: str | os.PathLike, dataset: str) -> dict[tuple[int, float], Path]:
    """(seed, level) -> file for every published prediction file of ``dataset`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of published predictions not found (e.g. {dataset}_L1-prune_preds/)")
    pattern = re.compile(rf"^{re.escape(dataset)}_resnet50_seed-(\d+)_prune-(\d+(?:\.\d+)?)\.pkl$")
    found: dict[tuple[int, float], Path] = {}
    for path in sorted(folder.iterdir()):
        m = pattern.match(path.name)
        if not m:
            continue
        key = (int(m.group(1)), _level_key(float(m.group(2))))
        if key in found:
            raise DataError(f"{folder}: {found[key].name} and {path.name} are both seed {key[0]} at sparsity "
                            f"{key[1]:g}; keep one")
        found[key] = path
    if not found:
        raise DataError(f"{folder}: no files named {pickle_name(dataset, 0, 0.05)} (and so on); is this the "
                        f"{dataset}_L1-prune_preds folder, and is --dataset right?")
    return found


def label_files(labels: str | os.PathLike, dataset: str,
                train_labels: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(test CSV, train CSV): ``labels`` is the test CSV or the folder holding the label CSVs;
    the train CSV defaults to the test CSV's name with ``test`` replaced by ``train``."""
    labels = Path(labels)
    default = DATASETS[dataset][1]
    test = labels / default.format(split="test") if labels.is_dir() else labels
    if not test.is_file():
        raise DataError(f"{test}: test label file not found (pass --labels the {default.format(split='test')} "
                        f"file or its folder)")
    if train_labels is not None:
        train = Path(train_labels)
    elif "test" in test.name:
        head, _, tail = test.name.rpartition("test")
        train = test.with_name(f"{head}train{tail}")
    else:
        train = test.with_name(default.format(split="train"))
    if not train.is_file():
        raise DataError(f"{train}: train label file not found; the analyses relate forgetting to train counts, so "
                        f"pass --train-labels or put it next to the test label file")
    return test, train


def read_labels(path: Path, dataset: str) -> pd.DataFrame:
    """One label CSV as ``image_id, patient_id, <classes>`` (int8), validated like prepare does."""
    classes = list(DATASETS[dataset][0])
    if dataset == "nih-cxr-lt":
        df = read_nih_label_file(path, path.parent, classes)
    else:
        df = read_mimic_label_file(path, path.parent, classes)
    dup = df["image_id"][df["image_id"].duplicated()].unique()
    if len(dup):
        raise DataError(f"{path}: duplicate id(s) {list(dup[:5])} ({len(dup)} in all); ids must be unique")
    return df.drop(columns=["path"]).reset_index(drop=True)


@dataclass
class ImportSummary:
    dataset: str
    seeds: list[int]
    levels: list[float]
    n_test: int
    n_train: int
    files_read: int
    ignored: list[str] = field(default_factory=list)  # files for seeds/levels not configured
    prepared_dir: Path | None = None
    predictions_dir: Path | None = None


def import_predictions(
    folder: str | os.PathLike,
    labels: str | os.PathLike,
    dataset: str,
    *,
    seeds: Sequence[int],
    levels: Sequence[float],
    prepared_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    train_labels: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
) -> ImportSummary:
    """Validate the published pickles of ``seeds`` x ``levels`` and write this project's tables.

    Nothing is written unless every file passes: the per-seed tables are staged in a
    temporary folder and moved into ``predictions_dir`` at the end, the prepared folder is
    replaced atomically. An existing ``prepared_dir`` that is not an import is refused
    (a real prepared cache is expensive to rebuild): use another ``data.name``.

    ``models_dir`` (``data/models/<name>``), when given and absent, is created holding only
    ``imported.json``, a note that no trained models come with published predictions: the
    analyze stage of dvc.yaml depends on that folder and DVC refuses a missing dependency.
    """
    if dataset not in DATASETS:
        raise DataError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    prepared_dir, predictions_dir = Path(prepared_dir), Path(predictions_dir)
    _refuse_overwriting_a_prepared_dataset(prepared_dir)
    classes = list(DATASETS[dataset][0])
    found = find_pickles(folder, dataset)
    wanted = [(s, _level_key(k)) for s in seeds for k in sorted(levels)]
    _require_all_present(found, wanted, dataset, Path(folder))
    ignored = sorted(p.name for key, p in found.items() if key not in set(wanted))
    test_path, train_path = label_files(labels, dataset, train_labels)
    test = read_labels(test_path, dataset)
    train = read_labels(train_path, dataset)
    shared = sorted(set(test["image_id"]) & set(train["image_id"]))
    if shared:
        raise DataError(f"{test_path}: image id(s) {shared[:_SHOWN]} also appear in {train_path.name}; "
                        f"is --train-labels the train file of the same dataset?")
    truth = test[classes].to_numpy(dtype=bool)

    predictions_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{predictions_dir.name}.import-", dir=predictions_dir.parent))
    try:
        checked_labels: list[np.ndarray] = []
        for seed in seeds:
            blocks = []
            for k in sorted(levels):
                path = found[(seed, _level_key(k))]
                probs = read_published(path, classes, test, truth, test_path, checked_labels)
                blocks.append(_block(test["image_id"], k, probs, classes))
            pd.concat(blocks, ignore_index=True).to_parquet(staging / f"seed-{seed}.parquet", index=False)
        with atomic_dir(prepared_dir) as tmp:
            for split, df in (("train", train), ("test", test)):
                df.to_parquet(tmp / f"labels_{split}.parquet", index=False)
                np.save(tmp / f"images_{split}.npy", np.zeros((len(df), 1, 1), dtype=np.uint8))
            write_json(tmp / "meta.json", {
                "classes": classes, "image_size": 1, "source": dataset,
                "counts": {"train": len(train), "test": len(test)},
                "imported": {"folder": str(Path(folder).resolve()), "test_labels": str(test_path.resolve()),
                             "train_labels": str(train_path.resolve()), "method": METHOD,
                             "seeds": list(seeds), "levels": [float(k) for k in sorted(levels)],
                             "note": "published predictions; images_*.npy are 1x1 placeholders, "
                                     "there is nothing to train on"},
            })
        predictions_dir.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            os.replace(staging / f"seed-{seed}.parquet", predictions_dir / f"seed-{seed}.parquet")
        if models_dir is not None and not Path(models_dir).exists():
            write_json(Path(models_dir) / "imported.json", {
                "note": "published predictions were imported for this data.name; no trained models come with "
                        "them, so there is no checkpoint for the weight-magnitude analysis",
                "predictions": str(predictions_dir)})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportSummary(dataset, list(seeds), [float(k) for k in sorted(levels)], len(test), len(train),
                         len(wanted), ignored, prepared_dir, predictions_dir)


def read_published(path: Path, classes: list[str], test: pd.DataFrame, truth: np.ndarray, test_path: Path,
                   checked_labels: list[np.ndarray] | None = None) -> np.ndarray:
    """One published pickle's probabilities ``(N, C)`` float32 in ``classes`` order, checked
    against the test labels (``truth``: the 0/1 matrix of ``test`` as bool)."""
    try:
        df = pd.read_pickle(path)
    except Exception as exc:  # unpickling raises anything
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path}: holds a {type(df).__name__}, not a pandas DataFrame of predictions")
    columns = [str(c) for c in df.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicated column(s) {duplicated[:5]}; each class and {LABEL_COLUMN!r} must "
                        f"appear once")
    missing = [c for c in classes if c not in columns]
    extra = [c for c in columns if c not in classes and c != LABEL_COLUMN]
    if missing or extra or LABEL_COLUMN not in columns:
        raise DataError(f"{path}: columns do not match the {len(classes)} classes + {LABEL_COLUMN!r}: "
                        f"missing {missing[:5] + ([LABEL_COLUMN] if LABEL_COLUMN not in columns else [])}, "
                        f"unexpected {extra[:5]}")
    if len(df) != len(test):
        raise DataError(f"{path}: {len(df)} rows but {test_path.name} has {len(test)} test images; the rows must "
                        f"follow the test label file")
    _check_label_column(path, df[LABEL_COLUMN].to_numpy(), classes, test, truth, test_path,
                        [c for c in columns if c in classes], checked_labels)
    not_numbers = [f"{c} ({df[c].dtype})" for c in classes if getattr(df[c].dtype, "kind", "O") not in "iuf"]
    if not_numbers:
        raise DataError(f"{path}: class columns must hold numbers (probabilities), found {not_numbers[:3]}")
    try:
        probs = df[classes].to_numpy(dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: class columns must hold numbers") from None
    with np.errstate(invalid="ignore"):
        bad = ~((probs >= 0) & (probs <= 1))
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise DataError(f"{path}: probability {probs[row, col]!r} of {classes[col]!r} in row {row} (image "
                        f"{test['image_id'].iloc[row]}) is not a number in [0, 1]")
    return probs.astype(np.float32)


def _check_label_column(path: Path, got: np.ndarray, classes: list[str], test: pd.DataFrame, truth: np.ndarray,
                        test_path: Path, file_order: list[str], checked: list[np.ndarray] | None) -> None:
    """Every row's ``label`` names exactly the row's positive classes of the label file."""
    if checked is not None and any(len(c) == len(got) and np.array_equal(c, got) for c in checked):
        return  # the same column as an earlier file of this import: already checked
    index = {c: i for i, c in enumerate(classes)}
    order = [index[c] for c in file_order]
    expected = np.array(["|".join(classes[j] for j in order if row[j]) for row in truth], dtype=object)
    got_str = np.array(["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in got], dtype=object)
    differ = np.flatnonzero(got_str != expected)
    # Same classes in another order is still a match.
    differ = [i for i in differ if set(filter(None, got_str[i].split("|"))) != set(filter(None, expected[i].split("|")))]
    if differ:
        shown = ", ".join(f"row {i} (image {test['image_id'].iloc[i]}: pickle {got_str[i]!r}, label file "
                          f"{expected[i]!r})" for i in differ[:_SHOWN])
        raise DataError(f"{path}: column {LABEL_COLUMN!r} disagrees with {test_path.name} in {len(differ)} row(s), "
                        f"first {shown}; the rows must follow the test label file of the same dataset")
    if checked is not None:
        checked.append(got)


def _block(image_ids: pd.Series, level: float, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    n = len(image_ids)
    meta = pd.DataFrame({"image_id": image_ids.astype(str).to_numpy(), "method": [METHOD] * n,
                         "sparsity": np.full(n, float(level), dtype=np.float64)})
    return pd.concat([meta, pd.DataFrame(probs, columns=classes)], axis=1)


def _require_all_present(found: dict, wanted: list[tuple[int, float]], dataset: str, folder: Path) -> None:
    missing = [key for key in wanted if key not in found]
    if not missing:
        return
    by_seed: dict[int, list[float]] = {}
    for seed, k in missing:
        by_seed.setdefault(seed, []).append(k)
    n_levels = len({k for _, k in wanted})
    parts = [f"seed {s} at {'all ' + str(n_levels) + ' levels' if len(ks) == n_levels else ', '.join(f'{k:g}' for k in ks)}"
             for s, ks in by_seed.items()]
    shown = "; ".join(parts[:6]) + (f"; and {len(parts) - 6} more seeds" if len(parts) > 6 else "")
    raise DataError(f"{folder}: {len(missing)} of {len(wanted)} (seed, sparsity) files missing: {shown} "
                    f"(e.g. {pickle_name(dataset, *missing[0])}); download them or set seeds / prune.levels in "
                    f"params.yaml to the ones you have")


def _refuse_overwriting_a_prepared_dataset(prepared_dir: Path) -> None:
    meta = prepared_dir / "meta.json"
    if not meta.is_file():
        if prepared_dir.exists() and any(prepared_dir.iterdir()):
            raise DataError(f"{prepared_dir}: exists and is not an import; choose another data.name for the "
                            f"imported predictions (e.g. nih-cxr-lt-published)")
        return
    import json

    try:
        imported = "imported" in json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        imported = False
    if not imported:
        raise DataError(f"{prepared_dir}: holds a prepared dataset, which an import would replace; choose another "
                        f"data.name for the imported predictions (e.g. nih-cxr-lt-published)")


def report(summary: ImportSummary) -> None:
    print(f"imported {summary.files_read} {summary.dataset} prediction files ({len(summary.seeds)} seeds x "
          f"{len(summary.levels)} levels, {summary.n_test} test images, {summary.n_train} train label rows) -> "
          f"{summary.predictions_dir}, {summary.prepared_dir}")
    if summary.ignored:
        print(f"note: {len(summary.ignored)} file(s) for seeds or levels not in params.yaml were not imported, "
              f"e.g. {summary.ignored[:2]}", file=sys.stderr)
