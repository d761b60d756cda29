"""Training of one seed: BCE-with-logits, Adam, early stopping on validation loss.

Follows the paper (and torchvision's ``references/classification`` in spirit): a plain loop,
the best-validation-loss weights kept, per-epoch history. Batches are drawn straight from
the uint8 cache held as one tensor; augmentation runs on the whole batch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .augment import augment, normalize, to_unit
from .config import TrainConfig
from .metrics import average_precision, roc_auc
from .models import build_model, pick_device, set_threads

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_map", "val_auroc", "seconds"]


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int
    best_val_loss: float
    history: pd.DataFrame
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and return the generator that drives shuffling and augmentation."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def train_model(cfg: TrainConfig, seed: int, train_labels: pd.DataFrame, train_images: np.ndarray,
                val_labels: pd.DataFrame, val_images: np.ndarray, classes: list[str],
                on_epoch=None) -> TrainResult:
    """Train one model; ``on_epoch(row: dict)`` is called after every epoch (for MLflow)."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    gen = seed_everything(seed)
    model = build_model(cfg.arch, len(classes), cfg.pretrained).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()

    x_train = torch.from_numpy(np.ascontiguousarray(train_images))
    y_train = torch.from_numpy(train_labels[classes].to_numpy(np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(val_images))
    y_val = val_labels[classes].to_numpy(np.float32)

    best_loss, best_epoch, best_state, stale = float("inf"), -1, None, 0
    rows = []
    epochs = tqdm(range(cfg.epochs), desc=f"train seed {seed}", unit="epoch", disable=None)
    for epoch in epochs:
        start = time.perf_counter()
        train_loss = _train_epoch(model, optimizer, loss_fn, x_train, y_train, cfg, gen, device)
        val_loss, val_probs = _validate(model, loss_fn, x_val, y_val, cfg.batch_size, device)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_map": float(np.nanmean(average_precision(y_val, val_probs))),
            "val_auroc": float(np.nanmean(roc_auc(y_val, val_probs))),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", mAP=f"{row['val_map']:.3f}")
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return TrainResult(model, best_epoch, best_loss, pd.DataFrame(rows, columns=HISTORY_COLUMNS))


def _train_epoch(model, optimizer, loss_fn, x, y, cfg: TrainConfig, gen, device) -> float:
    model.train()
    perm = torch.randperm(x.shape[0], generator=gen)
    total, seen = 0.0, 0
    for start in range(0, len(perm), cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        inputs = normalize(augment(to_unit(x[idx], device), cfg.rotation, cfg.hflip, gen))
        target = y[idx].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), target)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / seen


@torch.inference_mode()
def _validate(model, loss_fn, x, y: np.ndarray, batch_size: int, device) -> tuple[float, np.ndarray]:
    model.eval()
    logits = []
    for start in range(0, x.shape[0], batch_size):
        logits.append(model(normalize(to_unit(x[start:start + batch_size], device))).float().cpu())
    logits_t = torch.cat(logits)
    loss = float(loss_fn(logits_t, torch.from_numpy(y)))
    return loss, torch.sigmoid(logits_t).numpy()
