"""A trained seed's outputs in ``data/models/<name>/seed-<s>/``: ``model.pt`` written and read
here (and nowhere else), ``history.csv`` read back checked (``run.json``, the seed's MLflow run,
is :mod:`cxrprune.tracking.run_record`'s).

``model.pt`` is ``{"arch", "classes", "image_size", "state_dict", "epoch", "val_loss", "seed"}``,
loaded with ``weights_only=True`` (plain tensors and Python values: loading runs no code).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from cxrprune.core import upstream
from cxrprune.core.atomic import atomic_path
from cxrprune.core.config import Params
from cxrprune.core.errors import CxrpruneError, DataError
from cxrprune.core.layout import producer
from cxrprune.training.models import build_model

# history.csv: one row per finished epoch.
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_map", "val_auroc", "seconds"]


def save_model(path: str | os.PathLike, model: nn.Module, *, arch: str, classes: list[str], image_size: int,
               epoch: int, val_loss: float, seed: int) -> None:
    """Write ``model.pt`` atomically; the bytes depend on the weights and these values only."""
    ckpt = {"arch": arch, "classes": list(classes), "image_size": image_size,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "epoch": epoch, "val_loss": val_loss, "seed": seed}
    with atomic_path(Path(path), suffix=".pt") as tmp, open(tmp, "wb") as f:
        torch.save(ckpt, f)  # a file object, not the temporary name: the name would be in the bytes


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a ``model.pt`` checkpoint; returns ``(model, checkpoint)``."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CxrpruneError(f"{path}: checkpoint not found; run `dvc repro {producer('model_file')}` first") from None
    except Exception as exc:
        raise CxrpruneError(f"{path}: damaged checkpoint ({type(exc).__name__}); rerun the train stage") from None
    for key in ("arch", "classes", "state_dict"):
        if key not in ckpt:
            raise CxrpruneError(f"{path}: checkpoint lacks {key!r}; rerun the train stage")
    model = build_model(ckpt["arch"], len(ckpt["classes"]), image_size=ckpt.get("image_size"))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device), ckpt



def read_history(params: Params, seed: int) -> pd.DataFrame:
    """``history.csv`` of a trained seed, checked (columns, at least one epoch, finite losses)."""
    path = params.layout.history(seed)
    fix = f"rerun `dvc repro {producer('model_file', seed)} --force`"
    history = upstream.read_csv(path, producer('history', seed))
    if list(history.columns) != HISTORY_COLUMNS or history.empty:
        raise DataError(f"{path}: expected columns {HISTORY_COLUMNS} and at least one epoch, found "
                        f"{list(history.columns)} with {len(history)} row(s); {fix}")
    if not pd.api.types.is_numeric_dtype(history["val_loss"]) or history["val_loss"].isna().all():
        raise DataError(f"{path}: column val_loss holds no numbers; {fix}")
    return history

