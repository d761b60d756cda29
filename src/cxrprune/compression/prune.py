"""Compress one trained model with every method at every level and predict the test set at each.

Each method (:mod:`cxrprune.compression.methods`) yields its compressed models in
increasing level order (for the pruning methods: one ordering of the weights per model,
each level zeroing the next slice in place); the test images stay in memory as one uint8
tensor for all levels x methods passes (on a GPU, on the GPU).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cxrprune.compression import methods as compression_methods
from cxrprune.compression.predict import predict_probs
from cxrprune.compression.predictions import LevelResult
from cxrprune.core.runtime import cache_on_device, cpu_heap_reuse


def prune_and_predict(model: nn.Module, images: torch.Tensor, methods: list[str], levels: list[float],
                      seed: int, batch_size: int, device: torch.device, on_level=None, *,
                      autocast: str | None = None, allow_tf32: bool = False) -> list[LevelResult]:
    """Predictions for every (method, level); ``on_level(result)`` is called after each.

    ``autocast`` (``"bf16"``/``"fp16"``) and ``allow_tf32`` are opt-in lower precision for
    GPUs (see :func:`cxrprune.core.numerics.precision`); the default is fp32. On the CPU all
    passes share one :func:`~cxrprune.core.runtime.cpu_heap_reuse` scope (the heap is not
    trimmed between levels).
    """
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    images = cache_on_device(images, device)
    with cpu_heap_reuse() if device.type == "cpu" else contextlib.nullcontext():
        return _prune_and_predict(model, images, methods, levels, seed, batch_size, device, on_level,
                                  autocast, allow_tf32)


def _prune_and_predict(model, images, methods, levels, seed, batch_size, device, on_level, autocast,
                       allow_tf32) -> list[LevelResult]:
    results = []
    for method in methods:
        for c in compression_methods.get(method).compress(model, levels, seed):
            probs = predict_probs(c.model, images, batch_size, device, autocast=autocast, allow_tf32=allow_tf32)
            res = LevelResult(method, c.level, c.measured_sparsity, probs)
            results.append(res)
            if on_level is not None:
                on_level(res)
    return results



