"""DVC stage ``train@<seed>``: train one seed, write its checkpoint, history and run id.

Resumable: the whole training state is saved at the end of every epoch
(:mod:`cxrprune.checkpoint`, ``data/.resume/<name>/train-seed-<s>.pt``), so a killed
training continues from its last finished epoch when the stage runs again, in the same
MLflow run (tagged ``resumed=true`` and ``resume_count``). The DVC outputs come first:
MLflow trouble during training (a server that goes away) is a warning, not a failure, and
``cxrprune log-mlflow --seed <s>`` writes the missing records later from the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import checkpoint, tracking
from ..atomic import atomic_path, write_csv, write_json
from ..config import Params, to_dict
from ..errors import ConfigError, DataError, TrackingError
from ..prepare import load_meta, load_split
from ..train import HISTORY_COLUMNS, train_model


def model_dir(params: Params, seed: int) -> Path:
    return Path("data/models") / params.data.name / f"seed-{seed}"


def run(params: Params, seed: int) -> None:
    if seed not in params.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml seeds {params.seeds}")
    out = model_dir(params, seed)
    prepared = params.data.prepared_dir
    classes = load_meta(prepared)["classes"]
    # Training reads every byte of the cache anyway: check it whole (about 1.8 GB/s).
    train_labels, train_images = load_split(prepared, "train", verify="full")
    val_labels, val_images = load_split(prepared, "val", verify="full")

    experiment_id = tracking.start(params.mlflow)  # fails fast if the server is down
    resume = checkpoint.ResumeFile(checkpoint.resume_path(params, seed), checkpoint.fingerprint(params, seed))
    state = resume.load()
    if resume.superseded_run_id:
        _close_superseded(resume.superseded_run_id)
    log = tracking.SafeLogger(seed, "training")
    count = int(state.get("resume_count", 0)) + 1 if state is not None else 0
    run_id = open_run(params, seed, experiment_id, run_id=state.get("run_id") if state else None,
                      resume_count=count)
    if state is None:  # the run id is on disk before any work: a kill now leaves no orphan run
        resume.save({"epoch": -1, "run_id": run_id, "resume_count": 0})
    else:
        done = state.get("epoch", -1) + 1
        print(f"train: resuming seed {seed} after {done} finished epoch(s) from {resume.path} "
              f"(MLflow run {run_id})", file=sys.stderr)
        log.call(log_missing_epochs, run_id, state.get("history", []))

    def save(training_state: dict) -> None:
        resume.save({**training_state, "run_id": run_id, "resume_count": count})

    try:
        result = train_model(params.train, seed, train_labels, train_images, val_labels, val_images, classes,
                             on_epoch=lambda row: log.call(tracking.log_metrics, run_id, epoch_metrics(row),
                                                           step=row["epoch"]),
                             resume=state, on_checkpoint=save)
    except BaseException:  # Ctrl-C or an error: the run is unfinished (not FINISHED), rerunning resumes it
        _end_quietly("KILLED")
        raise
    # The DVC outputs, each atomic, before the final MLflow records.
    ckpt = {"arch": params.train.arch, "classes": classes, "image_size": params.data.image_size,
            "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
            "epoch": result.best_epoch, "val_loss": result.best_val_loss, "seed": seed}
    with atomic_path(out / "model.pt", suffix=".pt") as tmp, open(tmp, "wb") as f:
        torch.save(ckpt, f)  # a file object, not the temporary name: the bytes depend on the weights only
    write_csv(out / "history.csv", result.history)
    write_json(out / "run.json", {"run_id": run_id, "experiment_id": experiment_id,
                                  "tracking_uri": tracking.tracking_uri(params.mlflow)})
    log.call(log_result, run_id, result.history, out / "model.pt")
    log.call(end_run, run_id)
    resume.delete()
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    print(f"seed {seed}: best epoch {result.best_epoch}, val loss {result.best_val_loss:.4f}, "
          f"val mAP {best['val_map']:.3f} -> {out}")
    log.report()


# --- MLflow records of a training run (also used by `cxrprune log-mlflow`) ------------------


def run_tags(params: Params, seed: int) -> dict[str, str]:
    return {**tracking.context_tags(), "cxrprune_stage": "train", "seed": str(seed), "dataset": params.data.name}


def run_params(params: Params, seed: int) -> dict[str, Any]:
    cfg = to_dict(params)
    return {"seed": seed, **tracking.flatten("data", cfg["data"]), **tracking.flatten("train", cfg["train"])}


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
        tracking.log_params(run.info.run_id, run_params(params, seed))
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
        tracking.log_metrics(run_id, epoch_metrics(row), step=int(row["epoch"]))
    return len(missing)


def result_metrics(history: pd.DataFrame) -> dict[str, float]:
    """best_epoch / best_val_loss / best_val_map / best_val_auroc from the history table
    (the best epoch is the first one with the lowest validation loss, as in training)."""
    best = history.loc[history["val_loss"].idxmin()]
    return {"best_epoch": int(best["epoch"]), "best_val_loss": float(best["val_loss"]),
            "best_val_map": float(best["val_map"]), "best_val_auroc": float(best["val_auroc"])}


def checkpoint_tags(model_path: Path) -> dict[str, str]:
    return {"checkpoint": str(model_path), "checkpoint_md5": tracking.file_md5(model_path)}


def log_result(run_id: str, history: pd.DataFrame, model_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    tracking.log_metrics(run_id, result_metrics(history))
    client = MlflowClient()
    for key, value in checkpoint_tags(model_path).items():
        client.set_tag(run_id, key, value)


def end_run(run_id: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run()
    else:
        mlflow.MlflowClient().set_terminated(run_id)


def _end_quietly(status: str) -> None:
    import mlflow

    try:
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
    except Exception:  # noqa: BLE001 - the store is gone; the resume file keeps the run id
        pass


def _close_superseded(run_id: str) -> None:
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

    out = model_dir(params, seed)
    client = MlflowClient()
    try:
        run_id = json.loads((out / "run.json").read_text(encoding="utf-8"))["run_id"]
        run = client.get_run(run_id)
        if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
            return run_id
    except (OSError, ValueError, KeyError, TypeError, MlflowException):
        pass
    if not (out / "model.pt").is_file():
        return None
    md5 = tracking.file_md5(out / "model.pt")
    runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.cxrprune_stage = 'train' and tags.seed = '{seed}' and "
                                            f"tags.checkpoint_md5 = '{md5}'")
    return runs[0].info.run_id if runs else None


def relog_training(params: Params, seed: int, experiment_id: str) -> tuple[str, list[str]]:
    """Make the store hold this seed's training run as its DVC outputs describe it (a run with
    params, one set of metrics per ``history.csv`` row, the best-epoch metrics and the
    checkpoint's md5), writing only what is missing; returns ``(run_id, what was written)``."""
    from mlflow.tracking import MlflowClient

    model_path = model_dir(params, seed) / "model.pt"
    if not model_path.is_file():
        raise DataError(f"{model_path}: not found; run `dvc repro train@{seed}` first")
    history = read_history(params, seed)
    client = MlflowClient()
    written: list[str] = []
    run_id = find_training_run(params, seed, experiment_id)
    if run_id is None:
        run = tracking.retry_locked(lambda: client.create_run(
            experiment_id, run_name=f"seed-{seed}", tags={**run_tags(params, seed), "relogged": "true"}))
        run_id = run.info.run_id
        tracking.log_params(run_id, run_params(params, seed))
        written.append("run and params")
    n = log_missing_epochs(run_id, history)
    if n:
        written.append(f"{n} epoch(s)")
    run = client.get_run(run_id)
    if "best_val_loss" not in run.data.metrics or run.data.tags.get("checkpoint_md5") != tracking.file_md5(model_path):
        log_result(run_id, history, model_path)
        written.append("best-epoch metrics and checkpoint tags")
    if run.info.status != "FINISHED":
        client.set_terminated(run_id, status="FINISHED")
        written.append(f"status FINISHED (was {run.info.status})")
    return run_id, written


def read_history(params: Params, seed: int) -> pd.DataFrame:
    """``history.csv`` of a trained seed, checked (columns, at least one epoch, finite losses)."""
    path = model_dir(params, seed) / "history.csv"
    fix = f"rerun `dvc repro train@{seed} --force`"
    try:
        history = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro train@{seed}` first") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({_first_line(exc)}); {fix}") from None
    if list(history.columns) != HISTORY_COLUMNS or history.empty:
        raise DataError(f"{path}: expected columns {HISTORY_COLUMNS} and at least one epoch, found "
                        f"{list(history.columns)} with {len(history)} row(s); {fix}")
    if not pd.api.types.is_numeric_dtype(history["val_loss"]) or history["val_loss"].isna().all():
        raise DataError(f"{path}: column val_loss holds no numbers; {fix}")
    return history


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
