"""DVC stage ``prune@<seed>``: predictions of one seed at every method and sparsity level.

The prediction table is a DVC output written first (atomically); MLflow children (one per
method and level, under the seed's training run, tagged with the table's md5) are logged
after it, so a tracking failure never loses computed predictions: it is a warning, and
``cxrprune log-mlflow --seed <s>`` logs the missing children later. Children already in the
store for the same table (same md5) are not logged twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import tracking
from ..atomic import write_parquet
from ..config import Params
from ..errors import ConfigError, DataError
from ..metrics import average_precision, roc_auc
from ..models import load_checkpoint, pick_device, set_threads
from ..prepare import load_meta, load_split
from ..prune import LevelResult, prune_and_predict, predictions_table
from .train import model_dir, relog_training


def predictions_path(params: Params, seed: int) -> Path:
    return Path("data/predictions") / params.data.name / f"seed-{seed}.parquet"


def run(params: Params, seed: int) -> None:
    if seed not in params.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml seeds {params.seeds}")
    set_threads(params.train.threads)
    device = pick_device(params.train.device)
    prepared = params.data.prepared_dir
    classes = load_meta(prepared)["classes"]
    labels, images = load_split(prepared, "test", verify="full")
    experiment_id = tracking.start(params.mlflow)  # fail before the work if the server is down

    model, _ = load_checkpoint(model_dir(params, seed) / "model.pt")
    x = torch.from_numpy(np.array(images))  # one read of the memory-mapped cache into RAM
    results = prune_and_predict(model, x, params.prune.methods, params.prune.levels, seed,
                                params.prune.batch_size, device,
                                autocast=None if params.prune.autocast == "none" else params.prune.autocast,
                                allow_tf32=params.prune.allow_tf32)
    path = predictions_path(params, seed)
    write_parquet(path, predictions_table(results, labels["image_id"].tolist(), classes))
    log = tracking.SafeLogger(seed, "pruning")
    log.call(log_children, params, seed, experiment_id, results, labels[classes].to_numpy(), classes,
             predictions_md5=tracking.file_md5(path))
    log.report()
    dense = next(r for r in results if r.method == "l1" and r.sparsity == 0.0)
    print(f"seed {seed}: {len(results)} (method, level) predictions over {len(labels)} test images, "
          f"dense mAP {np.nanmean(average_precision(labels[classes].to_numpy(), dense.probs)):.3f}")


def log_children(params: Params, seed: int, experiment_id: str, results: list[LevelResult],
                 y_true: np.ndarray, classes: list[str], *, predictions_md5: str | None = None,
                 parent: str | None = None, extra_tags: dict[str, str] | None = None) -> int:
    """One MLflow child run per (method, level) under the seed's training run (``parent``;
    by default found, or re-logged from the train outputs, by :func:`relog_training`).

    Children tagged with the same ``predictions_md5`` already in the store are skipped, so a
    rerun after an interruption logs only the missing ones; unfinished ones (a failure or a
    kill while logging) are deleted and logged again. Returns how many were logged.
    """
    import mlflow

    parent = parent or relog_training(params, seed, experiment_id)[0]
    present, unfinished = logged_children(experiment_id, parent, predictions_md5) if predictions_md5 else ({}, {})
    levels = sorted(params.prune.levels)
    client = mlflow.MlflowClient()
    n = 0
    for r in results:
        key = (r.method, f"{r.sparsity:g}")
        if key in present:
            continue
        for stale in unfinished.get(key, []):
            client.delete_run(stale)
        ap = average_precision(y_true, r.probs)
        metrics = {"map": float(np.nanmean(ap)), "mean_auroc": float(np.nanmean(roc_auc(y_true, r.probs))),
                   "measured_sparsity": r.measured_sparsity, "sparsity": r.sparsity,
                   **{f"ap/{c}": float(a) for c, a in zip(classes, ap)}}
        tags = {**tracking.context_tags(), "cxrprune_stage": "prune", "seed": str(seed), "method": r.method,
                "sparsity": f"{r.sparsity:g}", "dataset": params.data.name,
                **({"predictions_md5": predictions_md5} if predictions_md5 else {}), **(extra_tags or {})}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"seed-{seed}/{r.method}/k={r.sparsity:g}",
                              parent_run_id=parent, tags=tags, nested=mlflow.active_run() is not None) as child:
            tracking.log_params(child.info.run_id, {"seed": seed, "method": r.method, "sparsity": r.sparsity})
            tracking.log_metrics(child.info.run_id, metrics)
        # The seed's own run gets the curve: step = index of the level.
        if r.sparsity in levels:
            tracking.log_metrics(parent, {f"{r.method}/map": metrics["map"]}, step=levels.index(r.sparsity))
        n += 1
    return n


def logged_children(experiment_id: str, parent: str, predictions_md5: str
                    ) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], list[str]]]:
    """The children of ``parent`` logged for this prediction table, by (method, sparsity
    tag): ``(finished, unfinished)``, each a mapping to run ids."""
    runs = tracking.find_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}' and "
                                               f"tags.predictions_md5 = '{predictions_md5}'")
    finished: dict[tuple[str, str], list[str]] = {}
    unfinished: dict[tuple[str, str], list[str]] = {}
    for r in runs:
        key = (r.data.tags.get("method", ""), r.data.tags.get("sparsity", ""))
        (finished if r.info.status == "FINISHED" else unfinished).setdefault(key, []).append(r.info.run_id)
    return finished, unfinished


# --- reading a prediction table back, checked ---------------------------------------------


def read_predictions(params: Params, seed: int, test_ids: Sequence[str], classes: list[str]) -> pd.DataFrame:
    """``data/predictions/<name>/seed-<s>.parquet``, checked against the contract
    (:func:`check_predictions`); a missing or damaged table is a :class:`DataError` that
    says which stage to rerun."""
    path = predictions_path(params, seed)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro prune@{seed}` first")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataError(f"{path}: damaged, not a readable parquet file ({type(exc).__name__}); "
                        f"rerun `dvc repro prune@{seed} --force`") from None
    check_predictions(table, str(path), test_ids, classes, params.prune.methods, params.prune.levels,
                      fix=f"rerun `dvc repro prune@{seed} --force`")
    return table


def check_predictions(table: pd.DataFrame, where: str, test_ids: Sequence[str], classes: list[str],
                      methods: Sequence[str], levels: Sequence[float], fix: str = "rerun `dvc repro prune`") -> None:
    """The prediction-table contract: columns ``image_id, method, sparsity, <classes>``
    (float64 sparsity, float32 probabilities), test images x methods x levels rows, one
    block per configured (method, level) listing the test images in order, and every
    probability a finite number in [0, 1]."""
    expected = ["image_id", "method", "sparsity", *classes]
    if list(table.columns) != expected:
        cols = [str(c) for c in table.columns]
        missing = [c for c in expected if c not in cols]
        extra = [c for c in cols if c not in expected]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise DataError(f"{where}: columns differ from image_id, method, sparsity and the {len(classes)} classes "
                        f"(missing {missing[:5]}, unexpected {extra[:5]}, duplicated {dup[:5]}"
                        f"{', or out of order' if not (missing or extra or dup) else ''}); {fix}")
    n_test, n_blocks = len(test_ids), len(methods) * len(levels)
    if len(table) != n_test * n_blocks:
        raise DataError(f"{where}: {len(table)} rows, expected {n_test * n_blocks} = {n_test} test images x "
                        f"{len(methods)} method(s) x {len(levels)} level(s); truncated or stale, {fix}")
    if table["sparsity"].dtype != np.float64 or not all(table[c].dtype == np.float32 for c in classes):
        wrong = [f"{c} {table[c].dtype}" for c in ("sparsity", *classes)
                 if table[c].dtype != (np.float64 if c == "sparsity" else np.float32)]
        raise DataError(f"{where}: expected float64 sparsity and float32 probabilities, found {wrong[:3]}; {fix}")
    probs = table[classes].to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~((probs >= 0) & (probs <= 1))  # NaN fails both
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise DataError(f"{where}: probability {probs[row, col].item()!r} of class {classes[col]!r} in row {row} "
                        f"is not a finite number in [0, 1]; {fix}")
    ids = np.asarray([str(i) for i in test_ids], dtype=object)
    method = table["method"].astype(str).to_numpy()
    sparsity = table["sparsity"].to_numpy()
    image_id = table["image_id"].astype(str).to_numpy()
    for m in methods:
        for k in sorted(levels):
            rows = np.flatnonzero((method == m) & np.isclose(sparsity, k, rtol=0, atol=1e-9))
            if len(rows) != n_test or not np.array_equal(image_id[rows], ids):
                raise DataError(f"{where}: the block {m}@{k:g} has {len(rows)} row(s) that are not the {n_test} test "
                                f"images in order; {fix}")


def results_from_table(table: pd.DataFrame, classes: list[str]) -> list[LevelResult]:
    """A checked prediction table as :class:`LevelResult` blocks (the measured sparsity is
    not in the table: NaN, which MLflow logging skips)."""
    out = []
    for (method, k), block in table.groupby(["method", "sparsity"], sort=False):
        out.append(LevelResult(str(method), float(k), float("nan"), block[classes].to_numpy(np.float32)))
    return out
