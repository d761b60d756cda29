"""DVC stage ``prune@<seed>``: predictions of one seed at every method and sparsity level.

The prediction table is a DVC output written first; MLflow children (one per method and
level, under the seed's training run) are logged after it, so a tracking failure never
loses computed predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import tracking
from ..atomic import write_parquet
from ..config import Params
from ..errors import ConfigError
from ..metrics import average_precision, roc_auc
from ..models import load_checkpoint, pick_device, set_threads
from ..prepare import load_meta, load_split
from ..prune import LevelResult, prune_and_predict, predictions_table
from .train import model_dir


def predictions_path(params: Params, seed: int) -> Path:
    return Path("data/predictions") / params.data.name / f"seed-{seed}.parquet"


def run(params: Params, seed: int) -> None:
    if seed not in params.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml seeds {params.seeds}")
    set_threads(params.train.threads)
    device = pick_device(params.train.device)
    prepared = params.data.prepared_dir
    classes = load_meta(prepared)["classes"]
    labels, images = load_split(prepared, "test")
    experiment_id = tracking.start(params.mlflow)  # fail before the work if the server is down

    model, _ = load_checkpoint(model_dir(params, seed) / "model.pt")
    x = torch.from_numpy(np.ascontiguousarray(images))
    results = prune_and_predict(model, x, params.prune.methods, params.prune.levels, seed,
                                params.prune.batch_size, device)
    write_parquet(predictions_path(params, seed), predictions_table(results, labels["image_id"].tolist(), classes))
    log_children(params, seed, experiment_id, results, labels[classes].to_numpy(), classes)
    dense = next(r for r in results if r.method == "l1" and r.sparsity == 0.0)
    print(f"seed {seed}: {len(results)} (method, level) predictions over {len(labels)} test images, "
          f"dense mAP {np.nanmean(average_precision(labels[classes].to_numpy(), dense.probs)):.3f}")


def log_children(params: Params, seed: int, experiment_id: str, results: list[LevelResult],
                 y_true: np.ndarray, classes: list[str]) -> None:
    """One MLflow child run per (method, level) under the seed's training run."""
    import mlflow

    parent = _parent_run_id(params, seed, experiment_id)
    levels = sorted(params.prune.levels)
    for r in results:
        ap = average_precision(y_true, r.probs)
        metrics = {"map": float(np.nanmean(ap)), "mean_auroc": float(np.nanmean(roc_auc(y_true, r.probs))),
                   "measured_sparsity": r.measured_sparsity, "sparsity": r.sparsity,
                   **{f"ap/{c}": float(a) for c, a in zip(classes, ap)}}
        tags = {**tracking.context_tags(), "cxrprune_stage": "prune", "seed": str(seed), "method": r.method,
                "sparsity": f"{r.sparsity:g}", "dataset": params.data.name}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"seed-{seed}/{r.method}/k={r.sparsity:g}",
                              parent_run_id=parent, tags=tags) as child:
            tracking.log_params(child.info.run_id, {"seed": seed, "method": r.method, "sparsity": r.sparsity})
            tracking.log_metrics(child.info.run_id, metrics)
        # The seed's own run gets the curve: step = index of the level.
        tracking.log_metrics(parent, {f"{r.method}/map": metrics["map"]}, step=levels.index(r.sparsity))


def _parent_run_id(params: Params, seed: int, experiment_id: str) -> str:
    """The training run of this seed; a fresh parent if that run is not in this store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_file = model_dir(params, seed) / "run.json"
    try:
        run_id = json.loads(run_file.read_text())["run_id"]
        mlflow.get_run(run_id)
        return run_id
    except (FileNotFoundError, KeyError, json.JSONDecodeError, MlflowException):
        run = mlflow.MlflowClient().create_run(
            experiment_id, run_name=f"seed-{seed}",
            tags={**tracking.context_tags(), "cxrprune_stage": "train", "seed": str(seed),
                  "note": f"training run not found in this store ({run_file}); parent created by prune"})
        mlflow.MlflowClient().set_terminated(run.info.run_id)
        return run.info.run_id
