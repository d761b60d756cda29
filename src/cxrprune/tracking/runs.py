"""The MLflow run records of every stage, written from the stages and re-written from DVC
outputs by ``cxrprune log-mlflow``.

- training (``train@<seed>``): one run per seed, named ``seed-<s>``: params, per-epoch
  metrics, best-epoch metrics, the checkpoint's path and md5;
- pruning (``prune@<seed>``): one child run per (method, level) under the seed's run,
  tagged with the prediction table's md5 so a rerun logs only what is missing;
- summaries (``analyze``, ``reader-analyze``): one run each with flattened metrics, the
  stage's params and its figures as artifacts.

Every function takes the store as :mod:`cxrprune.tracking.store` set it up (``store.start``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrprune.core.config import Params, to_dict
from cxrprune.core.errors import DataError, TrackingError
from cxrprune.core.layout import producer
from cxrprune.tracking import store
from cxrprune.tracking.run_record import read_run_record
from cxrprune.training.modelfile import read_history


def run_tags(params: Params, seed: int) -> dict[str, str]:
    return {**store.context_tags(), "cxrprune_stage": "train", "seed": str(seed), "dataset": params.data.name}


def run_params(params: Params, seed: int) -> dict[str, Any]:
    cfg = to_dict(params)
    imported = store.flatten("model", cfg["model"]) if params.model.source == "checkpoint" else {}
    return {"seed": seed, **store.flatten("data", cfg["data"]), **store.flatten("train", cfg["train"]), **imported}


def epoch_metrics(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != "epoch"}


def open_run(params: Params, seed: int, experiment_id: str, run_id: str | None = None,
             resume_count: int = 0) -> str:
    """Continue ``run_id`` when the store has it (tagged ``resumed``), else start a new run
    with its params; returns the run id. The run stays active (``mlflow.active_run()``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        if run_id is not None:
            try:
                mlflow.MlflowClient().get_run(run_id)
            except MlflowException:
                print(f"train: MLflow run {run_id} of the interrupted training is not in this store; "
                      f"starting a new run", file=sys.stderr)
                run_id = None
        if run_id is not None:
            mlflow.start_run(run_id=run_id)
            if resume_count:
                mlflow.set_tags({"resumed": "true", "resume_count": str(resume_count)})
            return run_id
        run = mlflow.start_run(experiment_id=experiment_id, run_name=f"seed-{seed}", tags=run_tags(params, seed))
        store.log_params(run.info.run_id, run_params(params, seed))
        return run.info.run_id
    except MlflowException as exc:
        raise TrackingError(f"MLflow run of seed {seed} cannot be opened ({exc}); nothing was trained") from None


def log_missing_epochs(run_id: str, history: list[dict] | pd.DataFrame) -> int:
    """Log the epochs of ``history`` the run has no ``val_loss`` for; returns how many."""
    from mlflow.tracking import MlflowClient

    rows = history.to_dict("records") if isinstance(history, pd.DataFrame) else list(history)
    logged = {m.step for m in MlflowClient().get_metric_history(run_id, "val_loss")}
    missing = [r for r in rows if int(r["epoch"]) not in logged]
    for row in missing:
        store.log_metrics(run_id, epoch_metrics(row), step=int(row["epoch"]))
    return len(missing)


def result_metrics(history: pd.DataFrame) -> dict[str, float]:
    """best_epoch / best_val_loss / best_val_map / best_val_auroc from the history table
    (the best epoch is the first one with the lowest validation loss, as in training)."""
    best = history.loc[history["val_loss"].idxmin()]
    return {"best_epoch": int(best["epoch"]), "best_val_loss": float(best["val_loss"]),
            "best_val_map": float(best["val_map"]), "best_val_auroc": float(best["val_auroc"])}


def checkpoint_tags(model_path: Path) -> dict[str, str]:
    return {"checkpoint": str(model_path), "checkpoint_md5": store.file_md5(model_path)}


def log_result(run_id: str, history: pd.DataFrame, model_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    store.log_metrics(run_id, result_metrics(history))
    client = MlflowClient()
    for key, value in checkpoint_tags(model_path).items():
        client.set_tag(run_id, key, value)


def tag_import(run_id: str, source: str, md5: str) -> None:
    """Which file an imported model came from (``model.source: checkpoint``), by content."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, "imported_from", source)
    client.set_tag(run_id, "imported_md5", md5)


def end_run(run_id: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run()
    else:
        mlflow.MlflowClient().set_terminated(run_id)


def end_quietly(status: str) -> None:
    import mlflow

    try:
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
    except Exception:  # noqa: BLE001 - the store is gone; the resume file keeps the run id
        pass


def close_superseded(run_id: str) -> None:
    """The run of an ignored resume file (other params) will never finish: mark it killed."""
    import mlflow

    try:
        client = mlflow.MlflowClient()
        client.set_tag(run_id, "cxrprune_note", "interrupted; superseded by a training with other params")
        client.set_terminated(run_id, status="KILLED")
    except Exception:  # noqa: BLE001 - not in this store, or the store is busy: nothing to close
        pass


def find_training_run(params: Params, seed: int, experiment_id: str) -> str | None:
    """The store's training run of this seed's outputs: the one ``run.json`` names, else the
    latest one tagged with the checkpoint's md5; None when the store has neither."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    out = params.layout
    client = MlflowClient()
    try:
        run_id = (read_run_record(out.run_record(seed)) or {})["run_id"]
        run = client.get_run(run_id)
        if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
            return run_id
    except (OSError, ValueError, KeyError, TypeError, MlflowException):
        pass
    if not out.model_file(seed).is_file():
        return None
    md5 = store.file_md5(out.model_file(seed))
    runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.cxrprune_stage = 'train' and tags.seed = '{seed}' and "
                                            f"tags.checkpoint_md5 = '{md5}'")
    return runs[0].info.run_id if runs else None


def relog_training(params: Params, seed: int, experiment_id: str) -> tuple[str, list[str]]:
    """Make the store hold this seed's training run as its DVC outputs describe it (a run with
    params, one set of metrics per ``history.csv`` row, the best-epoch metrics and the
    checkpoint's md5), writing only what is missing; returns ``(run_id, what was written)``."""
    from mlflow.tracking import MlflowClient

    model_path = params.layout.model_file(seed)
    if not model_path.is_file():
        raise DataError(f"{model_path}: not found; run `dvc repro {producer('model_file', seed)}` first")
    history = read_history(params, seed)
    client = MlflowClient()
    written: list[str] = []
    run_id = find_training_run(params, seed, experiment_id)
    if run_id is None:
        run = store.retry_locked(lambda: client.create_run(
            experiment_id, run_name=f"seed-{seed}", tags={**run_tags(params, seed), "relogged": "true"}))
        run_id = run.info.run_id
        store.log_params(run_id, run_params(params, seed))
        written.append("run and params")
    n = log_missing_epochs(run_id, history)
    if n:
        written.append(f"{n} epoch(s)")
    run = client.get_run(run_id)
    if "best_val_loss" not in run.data.metrics or run.data.tags.get("checkpoint_md5") != store.file_md5(model_path):
        log_result(run_id, history, model_path)
        written.append("best-epoch metrics and checkpoint tags")
    if run.info.status != "FINISHED":
        client.set_terminated(run_id, status="FINISHED")
        written.append(f"status FINISHED (was {run.info.status})")
    return run_id, written


def log_children(params: Params, seed: int, experiment_id: str, results: Sequence[Any],
                 metrics: Sequence[Mapping[str, float]], *, predictions_md5: str | None = None,
                 parent: str | None = None, extra_tags: dict[str, str] | None = None) -> int:
    """One MLflow child run per (method, level) under the seed's training run (``parent``;
    by default found, or re-logged from the train outputs, by :func:`relog_training`).
    ``results`` have ``.method`` and ``.sparsity`` (prediction blocks); ``metrics[i]`` are
    result ``i``'s metrics (:func:`cxrprune.stats.metrics.child_metrics`), computed by
    the caller so that this module, which the train stage imports, needs no metrics code.

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
    for r, r_metrics in zip(results, metrics, strict=True):
        key = (r.method, f"{r.sparsity:g}")
        if key in present:
            continue
        for stale in unfinished.get(key, []):
            client.delete_run(stale)
        tags = {**store.context_tags(), "cxrprune_stage": "prune", "seed": str(seed), "method": r.method,
                "sparsity": f"{r.sparsity:g}", "dataset": params.data.name,
                **({"predictions_md5": predictions_md5} if predictions_md5 else {}), **(extra_tags or {})}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"seed-{seed}/{r.method}/k={r.sparsity:g}",
                              parent_run_id=parent, tags=tags, nested=mlflow.active_run() is not None) as child:
            store.log_params(child.info.run_id, {"seed": seed, "method": r.method, "sparsity": r.sparsity})
            store.log_metrics(child.info.run_id, dict(r_metrics))
        # The seed's own run gets the curve: step = index of the level.
        if r.sparsity in levels:
            store.log_metrics(parent, {f"{r.method}/map": r_metrics["map"]}, step=levels.index(r.sparsity))
        n += 1
    return n


def logged_children(experiment_id: str, parent: str, predictions_md5: str
                    ) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], list[str]]]:
    """The children of ``parent`` logged for this prediction table, by (method, sparsity
    tag): ``(finished, unfinished)``, each a mapping to run ids."""
    runs = store.find_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}' and "
                                               f"tags.predictions_md5 = '{predictions_md5}'")
    finished: dict[tuple[str, str], list[str]] = {}
    unfinished: dict[tuple[str, str], list[str]] = {}
    for r in runs:
        key = (r.data.tags.get("method", ""), r.data.tags.get("sparsity", ""))
        (finished if r.info.status == "FINISHED" else unfinished).setdefault(key, []).append(r.info.run_id)
    return finished, unfinished


