"""Training of one seed: BCE-with-logits, Adam, early stopping on validation loss.

Follows the paper (and torchvision's ``references/classification`` in spirit): a plain loop,
the best-validation-loss weights kept, per-epoch history. Batches are drawn straight from
the uint8 cache held as one tensor; augmentation runs on the whole batch.

Levers (``train`` params, measured in ``benchmarks/bench_train_speed.py``): a per-step
learning-rate schedule (:func:`learning_rate`: linear warm-up, then constant or cosine),
the precision (:mod:`cxrprune.core.numerics` decides it, for training and inference alike) and
``torch.compile`` of the training forward/backward (its compile time falls in epoch 0's
``seconds``), and ``train.ema_decay``: an exponential moving average of the weights
(:func:`weight_average`) is what is validated, early-stopped on and kept. On a GPU the uint8 cache is copied to the device once when it fits,
augmentation runs there, and nothing in a step waits for the device (fp16's gradient
scaler aside: it checks for infinities once per step). On CUDA, fp32 is IEEE fp32 and, with
``train.deterministic`` (the default), cuDNN runs its deterministic kernels without autotuning
(:func:`cxrprune.core.numerics.device_settings`), so a seed gives the same weights twice.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from cxrprune.core.config import TrainConfig
from cxrprune.core.errors import CxrpruneError
from cxrprune.core.numerics import autocast, compiled_kernel_cache, device_settings, grad_scaler, resolve_precision
from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.core.runtime import cache_on_device, pick_device, set_threads
from cxrprune.stats.metrics import average_precision, roc_auc
from cxrprune.training.augment import augment, normalize, to_unit
from cxrprune.training.conv_grad import gemm_weight_grad
from cxrprune.training.modelfile import HISTORY_COLUMNS
from cxrprune.training.models import build_model



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
                on_epoch=None, *, resume: dict | None = None, on_checkpoint=None,
                rows: np.ndarray | None = None, sample_weights: np.ndarray | None = None) -> TrainResult:
    """Train one model; ``on_epoch(row: dict)`` is called after every epoch (for MLflow).

    ``rows`` (indices into the training table) trains on that subset only; ``sample_weights``
    (aligned with ``train_labels``: one non-negative number per training row, or one per row
    and class) weights each image's loss, or each label's
    (``binary_cross_entropy_with_logits(weight=...)``: the batch mean of weight x loss; a
    label weighted 0 is out of the loss, as the frequency intervention hides positives).
    Without them the loss and every operation are the plain study's, so its models stay
    bit-identical.

    ``on_checkpoint(state: dict)`` is called at the end of every epoch, before ``on_epoch``,
    with everything needed to continue (see :func:`training_state`); ``resume``, such a state,
    continues from the epoch after it. On the CPU a resumed training ends with exactly the
    weights and history (but the ``seconds`` column) of an uninterrupted one.
    """
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)  # before any work: an unsupported one is an error
    gen = seed_everything(seed)
    model = build_model(cfg.arch, len(classes), cfg.pretrained, image_size=train_images.shape[-1]).to(
        device, memory_format=torch.channels_last)
    optimizer = adam(model.parameters(), cfg)
    scaler = grad_scaler(precision, device)
    ema = weight_average(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    judged = ema.module if ema is not None else model  # what is validated, early-stopped on and kept
    loss_fn = nn.BCEWithLogitsLoss()
    # The compiled module shares the model's parameters; validation and the saved state use
    # the model itself (no second compilation for eval mode, no "_orig_mod." keys).
    if cfg.compile:
        compiled_kernel_cache()
    step_model = torch.compile(model) if cfg.compile else model

    n_rows_table = len(train_labels)  # the weights align with the whole table, before any row subset
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        train_labels, train_images = train_labels.iloc[rows], train_images[rows]
    # One read of the memory-mapped cache into RAM, then (GPU) one copy to the device.
    x_train = cache_on_device(torch.from_numpy(np.array(train_images)), device)
    y_train = torch.from_numpy(train_labels[classes].to_numpy(np.float32, copy=True))  # writable: torch warns otherwise
    y_train = y_train.to(device) if x_train.device == device else y_train
    w_train = None
    if sample_weights is not None:
        w = np.asarray(sample_weights, dtype=np.float32)
        if w.shape not in ((n_rows_table,), (n_rows_table, len(classes))):
            raise CxrpruneError(f"sample_weights has shape {w.shape}; expected ({n_rows_table},) per image or "
                                f"({n_rows_table}, {len(classes)}) per image and class")
        w_train = torch.from_numpy(np.ascontiguousarray(w if rows is None else w[rows]))
    x_val = cache_on_device(torch.from_numpy(np.array(val_images)), device)
    y_val = val_labels[classes].to_numpy(np.float32, copy=True)

    best_loss, best_epoch, best_state, stale = float("inf"), -1, None, 0
    rows: list[dict] = []
    first, stopped = 0, False
    if resume is not None and resume.get("epoch", -1) >= 0:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        best_loss, best_epoch, stale = float(resume["best_loss"]), int(resume["best_epoch"]), int(resume["stale"])
        best_state = resume["best_state"]
        rows = [dict(r) for r in resume["history"]]
        first, stopped = int(resume["epoch"]) + 1, bool(resume["stopped"])
        _restore_rng(resume["rng"], gen)
    epochs = tqdm(range(first, cfg.epochs), desc=f"train seed {seed}", unit="epoch", disable=None,
                  initial=first, total=cfg.epochs)
    for epoch in ([] if stopped else epochs):
        start = time.perf_counter()
        train_loss = train_epoch(step_model, optimizer, loss_fn, x_train, y_train, cfg, gen, device, epoch=epoch,
                                  precision=precision, scaler=scaler, w=w_train, ema=ema)
        val_loss, val_probs = _validate(judged, loss_fn, x_val, y_val, cfg.batch_size, device, precision,
                                        cfg.deterministic)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_map": float(np.nanmean(average_precision(y_val, val_probs))),
            "val_auroc": float(np.nanmean(roc_auc(y_val, val_probs))),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", mAP=f"{row['val_map']:.3f}")
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(judged.state_dict())
        else:
            stale += 1
        stopped = stale >= cfg.patience
        if on_checkpoint is not None:
            on_checkpoint(training_state(epoch, model, optimizer, best_state, best_loss, best_epoch, stale,
                                         stopped, rows, gen, scaler, ema))
        if on_epoch is not None:
            on_epoch(row)
        if stopped:
            break
    epochs.close()
    if best_state is None:
        raise CxrpruneError(f"training of seed {seed} diverged: the validation loss was never a finite number "
                            f"({rows[-1]['val_loss'] if rows else 'no epoch'}); lower train.lr")
    model.load_state_dict(best_state)
    return TrainResult(model, best_epoch, best_loss, pd.DataFrame(rows, columns=HISTORY_COLUMNS),
                       extra={"resumed_from": first if first > 0 else None, "precision": precision})


def validation_row(model: nn.Module, cfg: TrainConfig, val_labels: pd.DataFrame, val_images: np.ndarray,
                   classes: list[str]) -> dict:
    """One ``history.csv`` row for a model that was not trained here (an imported checkpoint):
    epoch 0, no training loss, its validation loss, mAP and AUROC as a trained epoch's."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    start = time.perf_counter()
    x_val = cache_on_device(torch.from_numpy(np.array(val_images)), device)
    y_val = val_labels[classes].to_numpy(np.float32, copy=True)
    loss, probs = _validate(model.to(device), nn.BCEWithLogitsLoss(), x_val, y_val, cfg.batch_size, device,
                            precision, cfg.deterministic)
    return {"epoch": 0, "train_loss": float("nan"), "val_loss": loss,
            "val_map": float(np.nanmean(average_precision(y_val, probs))),
            "val_auroc": float(np.nanmean(roc_auc(y_val, probs))), "seconds": time.perf_counter() - start}


def training_state(epoch: int, model: nn.Module, optimizer, best_state, best_loss: float, best_epoch: int,
                   stale: int, stopped: bool, rows: list[dict], gen: torch.Generator, scaler=None,
                   ema: AveragedModel | None = None) -> dict:
    """Everything :func:`train_model` needs to continue after ``epoch`` (tensors, numbers, lists).

    The learning rate is a function of the step (:func:`learning_rate`), so the epoch is the
    whole schedule state; fp16's gradient scaler has its own (scale, growth tracker).
    """
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "best_state": best_state, "best_loss": best_loss, "best_epoch": best_epoch, "stale": stale,
            "stopped": stopped, "history": [dict(r) for r in rows], "rng": _capture_rng(gen),
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
            "ema": ema.state_dict() if ema is not None else {}}


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of ``model``'s weights and batch-norm statistics, updated
    after every optimizer step (``update_parameters``); ``.module`` is the averaged model.

    Why: at a rate high enough to learn fast the weights after any one step sit at a noisy
    point around the path; their average over the last ~1/(1 - decay) steps can be the better
    model sooner (Polyak averaging, torchvision's ``references/classification --model-ema``).
    torch's ``AveragedModel`` copies the weights at its first update, so the random start
    never enters the average. Measured on the default data (benchmarks/bench_train_speed.py):
    it smooths the validation loss but lags the validation mAP, so it is off by default.
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True).eval()


def _capture_rng(gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"generator": gen.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def _restore_rng(rng: dict, gen: torch.Generator) -> None:
    gen.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based, counted over the whole training).

    Linear warm-up over ``warmup_epochs`` (from ``lr / steps`` to ``lr``: Adam's first steps
    at full rate overshoot from a random start), then ``constant`` or a ``cosine`` decay to 0
    at ``epochs``: annealing lets the last epochs settle into a minimum that a constant rate
    keeps jumping out of, so a shorter training reaches the same validation mAP. A pure
    function of the step: a resumed training needs no scheduler state.
    """
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    total = cfg.epochs * steps_per_epoch
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def adam(parameters, cfg: TrainConfig) -> torch.optim.Adam:
    """The training optimizer. ``train.fused_adam``: torch's fused kernel, one kernel over
    every parameter instead of a Python loop of per-tensor ops (on a 2-core CPU an optimizer
    step of the ResNet10 ~6x faster, ~14% of a 32 px epoch; benchmarks/bench_train_speed.py).
    Same update rule; float rounding differs from the per-tensor loop."""
    if cfg.fused_adam:
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)


def train_epoch(model, optimizer, loss_fn, x, y, cfg: TrainConfig, gen, device, *, epoch: int = 0,
                 precision: str = "fp32", scaler=None, w=None, ema: AveragedModel | None = None) -> float:
    """One pass over the uint8 cache ``x`` in a seeded random order.

    Per batch: gather the uint8 rows, move them (pinned, asynchronously, on a GPU), convert,
    augment and normalise as whole-batch tensor ops. The running loss is kept on the device
    in float64 (the same arithmetic as summing ``float(loss) * n``) so a GPU is not
    synchronised at every step. On the CPU the epoch runs inside
    :func:`~cxrprune.core.heap.cpu_heap_reuse` (activations and gradients reuse freed heap
    memory instead of page-faulting fresh ``mmap``s at every step).
    """
    with (_heap_scope(device), gemm_weight_grad(model, enabled=_gemm_weight_grad(cfg, device, precision)),
          device_settings(device, deterministic=cfg.deterministic)):
        return _run_epoch(model, optimizer, loss_fn, x, y, cfg, gen, device, epoch, precision,
                          scaler if scaler is not None else grad_scaler(precision, device), w, ema)


def _heap_scope(device):
    return cpu_heap_reuse() if torch.device(device).type == "cpu" else contextlib.nullcontext()


def _gemm_weight_grad(cfg: TrainConfig, device, precision: str) -> bool:
    # Measured on the CPU in fp32 only (benchmarks/bench_conv_grad.py); a compiled model
    # generates its own backward kernels, and under autocast the saved input and the
    # gradient would differ in dtype.
    return (cfg.conv_weight_grad == "gemm" and torch.device(device).type == "cpu" and precision == "fp32"
            and not cfg.compile)


def _run_epoch(model, optimizer, loss_fn, x, y, cfg: TrainConfig, gen, device, epoch, precision, scaler,
               w=None, ema=None) -> float:
    model.train()
    perm = torch.randperm(x.shape[0], generator=gen)  # on the CPU generator: the same order on any device
    pin = torch.device(device).type == "cuda" and x.device.type == "cpu"
    total = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    steps = -(-len(perm) // cfg.batch_size)
    for i, start in enumerate(range(0, len(perm), cfg.batch_size)):
        idx = perm[start:start + cfg.batch_size]
        rows = idx.to(x.device, non_blocking=True)
        batch = x[rows].pin_memory() if pin else x[rows]
        inputs = normalize(augment(to_unit(batch, device), cfg.rotation, cfg.hflip, gen))
        target = y[rows.to(y.device)].to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, epoch * steps + i, steps)
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            logits = model(inputs)
        if w is None:
            loss = loss_fn(logits.float(), target)  # the loss in fp32 under any precision
        else:  # per-label weights, or per-image weights broadcast over the classes
            weight = w[rows.to(w.device)].to(device, non_blocking=True)
            weight = weight.unsqueeze(1) if weight.ndim == 1 else weight
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target, weight=weight)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.detach().double() * len(idx)
        seen += len(idx)
    return float(total) / seen


@torch.inference_mode()
def _validate(model, loss_fn, x, y: np.ndarray, batch_size: int, device,
              precision: str = "fp32", deterministic: bool = True) -> tuple[float, np.ndarray]:
    model.eval()
    logits = []
    with _heap_scope(device), device_settings(device, deterministic=deterministic), autocast(precision, device):
        for start in range(0, x.shape[0], batch_size):
            logits.append(model(normalize(to_unit(x[start:start + batch_size], device))).float())
    logits_t = torch.cat(logits).cpu()  # one transfer, no per-batch synchronisation
    loss = float(loss_fn(logits_t, torch.from_numpy(y)))
    return loss, torch.sigmoid(logits_t).numpy()
