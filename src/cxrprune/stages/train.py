"""DVC stage ``train@<seed>``: train one seed, write its checkpoint, history and run id."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import tracking
from ..atomic import atomic_path, write_csv, write_json
from ..config import Params, to_dict
from ..errors import ConfigError
from ..prepare import load_meta, load_split
from ..train import train_model


def model_dir(params: Params, seed: int) -> Path:
    return Path("data/models") / params.data.name / f"seed-{seed}"


def run(params: Params, seed: int) -> None:
    if seed not in params.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml seeds {params.seeds}")
    out = model_dir(params, seed)
    prepared = params.data.prepared_dir
    classes = load_meta(prepared)["classes"]
    train_labels, train_images = load_split(prepared, "train")
    val_labels, val_images = load_split(prepared, "val")

    experiment_id = tracking.start(params.mlflow)  # fails fast if the server is down
    import mlflow

    cfg = to_dict(params)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"seed-{seed}",
                          tags={**tracking.context_tags(), "cxrprune_stage": "train", "seed": str(seed),
                                "dataset": params.data.name}) as run:
        run_id = run.info.run_id
        tracking.log_params(run_id, {"seed": seed, **tracking.flatten("data", cfg["data"]),
                                     **tracking.flatten("train", cfg["train"])})

        def log_epoch(row: dict) -> None:
            tracking.log_metrics(run_id, {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

        result = train_model(params.train, seed, train_labels, train_images, val_labels, val_images,
                             classes, on_epoch=log_epoch)
        ckpt = {"arch": params.train.arch, "classes": classes, "image_size": params.data.image_size,
                "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
                "epoch": result.best_epoch, "val_loss": result.best_val_loss, "seed": seed}
        with atomic_path(out / "model.pt", suffix=".pt") as tmp:
            torch.save(ckpt, tmp)
        write_csv(out / "history.csv", result.history)
        best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
        tracking.log_metrics(run_id, {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                                      "best_val_map": float(best["val_map"]),
                                      "best_val_auroc": float(best["val_auroc"])})
        mlflow.set_tags({"checkpoint": str(out / "model.pt"), "checkpoint_md5": tracking.file_md5(out / "model.pt")})
        write_json(out / "run.json", {"run_id": run_id, "experiment_id": experiment_id,
                                      "tracking_uri": tracking.tracking_uri(params.mlflow)})
    print(f"seed {seed}: best epoch {result.best_epoch}, val loss {result.best_val_loss:.4f}, "
          f"val mAP {best['val_map']:.3f} -> {out}")
