"""Prune one trained model at every level and predict the test set at each.

One :class:`~cxrprune.masks.GlobalPruner` per model: the order of the weights is computed
once per method, levels are applied in increasing order by zeroing the next slice, and the
test images stay in memory as one uint8 tensor for all 20 x methods passes (on a GPU, on
the GPU).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .masks import GlobalPruner
from .predict import cpu_heap_reuse, predict_probs

# Offset that separates the random-pruning stream from the training stream of the same seed.
RANDOM_PRUNE_SEED_OFFSET = 1_000_003


@dataclass
class LevelResult:
    method: str
    sparsity: float
    measured_sparsity: float
    probs: np.ndarray  # (N, C) float32


def prune_and_predict(model: nn.Module, images: torch.Tensor, methods: list[str], levels: list[float],
                      seed: int, batch_size: int, device: torch.device, on_level=None, *,
                      autocast: str | None = None, allow_tf32: bool = False) -> list[LevelResult]:
    """Predictions for every (method, level); ``on_level(result)`` is called after each.

    ``autocast`` (``"bf16"``/``"fp16"``) and ``allow_tf32`` are opt-in lower precision for
    GPUs (see :func:`cxrprune.predict.precision`); the default is fp32. On the CPU all
    passes share one :func:`~cxrprune.predict.cpu_heap_reuse` scope (the heap is not
    trimmed between levels).
    """
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    images = _cache_on_device(images, device)
    with cpu_heap_reuse() if device.type == "cpu" else contextlib.nullcontext():
        return _prune_and_predict(model, images, methods, levels, seed, batch_size, device, on_level,
                                  autocast, allow_tf32)


def _prune_and_predict(model, images, methods, levels, seed, batch_size, device, on_level, autocast,
                       allow_tf32) -> list[LevelResult]:
    pruner = GlobalPruner(model)
    results = []
    for method in methods:
        gen = torch.Generator().manual_seed(seed + RANDOM_PRUNE_SEED_OFFSET)
        pruner.reset(method, gen)
        for level in sorted(levels):
            measured = pruner.apply(level)
            probs = predict_probs(model, images, batch_size, device, autocast=autocast, allow_tf32=allow_tf32)
            res = LevelResult(method, float(level), measured, probs)
            results.append(res)
            if on_level is not None:
                on_level(res)
    return results


def _cache_on_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The uint8 test cache, copied once to a GPU for all 20 x methods passes when it fits
    in a quarter of the free memory (21,000 images at 256x256 are 1.4 GB); else as is."""
    if device.type != "cuda" or images.device == device:
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() > free // 4:
        return images
    return images.to(device)


def predictions_table(results: list[LevelResult], image_ids: list[str], classes: list[str]) -> pd.DataFrame:
    """The contract table: image_id, method, sparsity, one float32 column per class."""
    n = len(image_ids)
    blocks = [pd.DataFrame({
        "image_id": pd.Series(image_ids, dtype=str),
        "method": pd.Series([r.method] * n, dtype=str),
        "sparsity": np.full(n, r.sparsity, dtype=np.float64),
    }) for r in results]
    meta = pd.concat(blocks, ignore_index=True)
    probs = pd.DataFrame(np.concatenate([r.probs for r in results]).astype(np.float32), columns=classes)
    return pd.concat([meta, probs], axis=1)
