"""Compress one trained model with every method at each of its levels, predict the test set
with each compressed model and measure its efficiency.

Each method (:mod:`cxrprune.compression.methods`) yields its compressed models in
increasing level order (for the pruning methods: one ordering of the weights per model,
each level zeroing the next slice in place); the test images stay in memory as one uint8
tensor for all levels x methods passes (on a GPU, on the GPU). Every method is checked
(:meth:`~cxrprune.compression.methods.base.Method.check`: engines installed, levels
reachable, architecture traceable) before the first prediction.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from cxrprune.compression.artifacts import save_state_dict
from cxrprune.compression.efficiency import measure
from cxrprune.compression.methods.base import Compressed, Context
from cxrprune.compression.methods.registry import get
from cxrprune.compression.predict import predict_probs
from cxrprune.compression.predictions import LevelResult
from cxrprune.core.config import PruneConfig, TrainConfig
from cxrprune.core.errors import DataError
from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.core.runtime import cache_on_device


def prune_and_predict(model: nn.Module, images: torch.Tensor, methods: list[str], levels: list[float],
                      seed: int, batch_size: int, device: torch.device, on_level=None, *,
                      autocast: str | None = None, allow_tf32: bool = False, context: Context | None = None,
                      efficiency: list[dict] | None = None, timed: bool = False) -> list[LevelResult]:
    """Predictions for every (method, level of :func:`~cxrprune.compression.methods.method_levels`);
    ``on_level(result)`` is called after each.

    ``autocast`` (``"bf16"``/``"fp16"``) and ``allow_tf32`` are opt-in lower precision for
    GPUs (see :func:`cxrprune.core.numerics.precision`); the default is fp32. On the CPU all
    passes share one :func:`~cxrprune.core.heap.cpu_heap_reuse` scope (the heap is not
    trimmed between levels). ``context`` gives methods their configuration and data (default:
    the default ``prune``/``train`` settings, no data). With ``efficiency`` (a list), one
    efficiency row per compressed model is appended to it, after a ``dense`` row; ``timed``
    adds latency and throughput (:mod:`cxrprune.compression.efficiency`).
    """
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    images = cache_on_device(images, device)
    ctx = context or Context(seed, PruneConfig(), TrainConfig(), device, int(images.shape[-1]), _no_data)
    chosen = {name: get(name) for name in methods}
    for method in chosen.values():
        method.check(model, method.levels(levels), ctx)

    def torch_predict(m: nn.Module):
        return lambda x: predict_probs(m, x, batch_size, device, autocast=autocast, allow_tf32=allow_tf32)

    dense_predict = torch_predict(model)

    def timing(name: str, c: Compressed, predict) -> None:
        if efficiency is not None:
            efficiency.append(measure(seed, name, c, predict, images, device, threads=ctx.prune.efficiency_threads,
                                      repeats=ctx.prune.efficiency_repeats, timed=timed,
                                      rounds=ctx.prune.latency_rounds,
                                      reference=None if name == "dense" else dense_predict))

    results = []
    with cpu_heap_reuse() if device.type == "cpu" else contextlib.nullcontext():
        timing("dense", Compressed(0.0, 0.0, lambda path: save_state_dict(model, path), model), dense_predict)
        for name, method in chosen.items():
            for c in method.compress(model, method.levels(levels), ctx):
                predict = c.predict if c.predict is not None else torch_predict(c.model)
                res = LevelResult(name, c.level, c.measured_sparsity, np.asarray(predict(images), dtype=np.float32))
                results.append(res)
                timing(name, c, predict)
                if on_level is not None:
                    on_level(res)
    return results


def _no_data(split: str):
    raise DataError(f"this compression run was given no data, but a method needs the {split} split")
