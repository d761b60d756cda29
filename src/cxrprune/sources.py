"""Dataset sources: read a dataset's label files in its own layout into one common form.

A source returns, per split, a DataFrame with ``image_id`` (str), ``patient_id`` (str),
``path`` (the image file) and one 0/1 column per class in the dataset's canonical order.
Everything after this point (validation, the image cache, training) is shared by all
sources, so the synthetic default exercises the same code path as the real datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .classes import NIH_CXR_LT_CLASSES
from .errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SourceData:
    classes: list[str]
    splits: dict[str, pd.DataFrame]  # split -> image_id, patient_id, path, classes...
    label_files: dict[str, Path]  # split -> the file its labels came from (for messages)
    truth: pd.DataFrame | None = None  # synthetic ground truth, when the dataset has it


def read_source(source: str, root: str | Path) -> SourceData:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; set data.root in params.yaml "
                        f"(for the synthetic default run `dvc repro generate`)")
    if source == "nih-cxr-lt":
        return read_nih_cxr_lt(root)
    raise DataError(f"data.source {source!r} is not supported by this version")


def read_nih_cxr_lt(root: Path) -> SourceData:
    """NIH ChestX-ray14 ``images/`` + ``miccai2023_nih-cxr-lt_labels_{split}.csv``."""
    classes = list(NIH_CXR_LT_CLASSES)
    splits, files = {}, {}
    for split in SPLITS:
        path = root / f"miccai2023_nih-cxr-lt_labels_{split}.csv"
        df = _read_csv(path, dtype={"id": str, "subj_id": str})
        _require_columns(df, path, ["id", "subj_id", *classes])
        extra = [c for c in df.columns if c not in ("id", "subj_id", *classes)]
        if extra:
            raise DataError(f"{path}: unexpected column(s) {extra[:5]}; the NIH-CXR-LT layout has "
                            f"id, the 20 classes and subj_id")
        out = pd.DataFrame({
            "image_id": df["id"].astype(str),
            "patient_id": df["subj_id"].astype(str),
            "path": [str(root / "images" / i) for i in df["id"].astype(str)],
        })
        out = pd.concat([out, binary_labels(df, classes, path)], axis=1)
        splits[split], files[split] = out, path
    truth_path = root / "synthetic_truth.csv"
    truth = _read_csv(truth_path, dtype={"id": str}) if truth_path.exists() else None
    if truth is not None:
        _require_columns(truth, truth_path, ["id", "split", "flipped", "flipped_class", "quality", "degradation"])
        truth = truth.rename(columns={"id": "image_id"})
        truth["flipped_class"] = truth["flipped_class"].fillna("").astype(str)
    return SourceData(classes, splits, files, truth)


def _read_csv(path: Path, dtype: dict) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def _require_columns(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {columns[:3]}... "
                        f"(see the README for this source's layout)")


def binary_labels(df: pd.DataFrame, classes: list[str], path: Path, id_column: str = "id") -> pd.DataFrame:
    """The class columns as int8, refusing NaN and anything other than 0/1."""
    out = {}
    for c in classes:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = ~col.isin([0, 1])
        if bad.any():
            rows = df.loc[bad, id_column].astype(str).head(3).tolist() if id_column in df else []
            values = df.loc[bad, c].head(3).tolist()
            raise DataError(f"{path}: column {c!r} must hold only 0/1; {int(bad.sum())} row(s) do not, "
                            f"e.g. ids {rows} with values {values}")
        out[c] = col.to_numpy(dtype=np.int8)
    return pd.DataFrame(out, index=df.index)
