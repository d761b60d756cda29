"""Prune one trained model at every level and predict the test set at each.

One :class:`~cxrprune.masks.GlobalPruner` per model: the order of the weights is computed
once per method, levels are applied in increasing order by zeroing the next slice, and the
test images stay in memory as one uint8 tensor for all 20 x methods passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .masks import GlobalPruner
from .predict import predict_probs

# Offset that separates the random-pruning stream from the training stream of the same seed.
RANDOM_PRUNE_SEED_OFFSET = 1_000_003


@dataclass
class LevelResult:
    method: str
    sparsity: float
    measured_sparsity: float
    probs: np.ndarray  # (N, C) float32


def prune_and_predict(model: nn.Module, images: torch.Tensor, methods: list[str], levels: list[float],
                      seed: int, batch_size: int, device: torch.device, on_level=None) -> list[LevelResult]:
    """Predictions for every (method, level); ``on_level(result)`` is called after each."""
    model = model.to(device, memory_format=torch.channels_last).eval()
    pruner = GlobalPruner(model)
    results = []
    for method in methods:
        gen = torch.Generator().manual_seed(seed + RANDOM_PRUNE_SEED_OFFSET)
        pruner.reset(method, gen)
        for level in sorted(levels):
            measured = pruner.apply(level)
            res = LevelResult(method, float(level), measured, predict_probs(model, images, batch_size, device))
            results.append(res)
            if on_level is not None:
                on_level(res)
    return results


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
