"""``channel``: structured pruning that removes whole convolution channels, yielding a
physically smaller dense model (fewer parameters and FLOPs, no sparse kernels needed).

Dependencies are tracked by torch-pruning (Fang et al., CVPR 2023, "DepGraph"), a maintained
library that traces the network once and groups every coupled dimension: a convolution's
output channels with its BatchNorm, the next layer's input channels and, through residual
additions, every layer that writes or reads the same residual channels. Hand-written graph
surgery would have to re-derive this per architecture.

Ranking: global over the network; a channel group's importance is the L2 norm of its weights
across all layers of the group, divided by the mean of its group (torch-pruning's
``MagnitudeImportance(p=2)`` defaults, which make the norms of layers with different fan-in
comparable). The final Linear layer keeps its outputs (the classes); its inputs are pruned
with the last block's channels.

Level: the fraction of the model's *parameters* removed (all parameters: weights, biases,
BatchNorm), the quantity comparable with unstructured sparsity. torch-pruning's knob is a
fraction of *channels*; a first pass on a copy measures parameters removed against channel
fraction and the channel fraction of each level is interpolated from it; the levels are then
produced in one nested pass along the same steps (each level prunes further channels of the
previous level's model). The achieved fraction is measured on the produced model (``measured_sparsity``: not
exactly the level; the efficiency table's ``nonzero_params`` and MLflow report it).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cxrprune.compression.artifacts import save_module
from cxrprune.compression.masks import single_thread
from cxrprune.compression.methods.base import Compressed, Context, Method
from cxrprune.core.errors import ConfigError

# Channel-fraction steps of the first pass: with 20, the achieved level of a ResNet10 was up to
# 0.024 off the requested one; with 40, within 0.009 (at 20 levels, ~2x the pruning time).
CALIBRATION_STEPS = 40
MAX_CHANNEL_FRACTION = 0.99  # torch-pruning keeps at least one channel per layer
LEVEL_SLACK = 0.005  # a level is reachable if the first pass removed at least level - slack


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError:
        raise ConfigError("prune.methods: channel needs torch-pruning, which is not installed; "
                          "`pip install torch-pruning` or remove channel from prune.methods") from None
    return torch_pruning


class ChannelPruning(Method):
    name = "channel"

    def __init__(self) -> None:
        self._table: tuple[np.ndarray, np.ndarray] | None = None  # (channel fraction, parameters removed)

    def check(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> None:
        _torch_pruning()
        fractions, removed = self._calibrate(model, ctx)
        top = float(removed[-1])
        too_high = [k for k in levels if k > top + LEVEL_SLACK]
        if too_high:
            raise ConfigError(f"prune.levels: channel pruning of this {type(model).__name__} removes at most "
                              f"{top:.3f} of the parameters (one channel kept per layer), so it cannot take level(s) "
                              f"{too_high}; lower them or remove channel from prune.methods")

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        fractions, removed = self._calibrate(model, ctx)
        levels = sorted(float(k) for k in levels)
        # Each level's channel fraction, interpolated from the first pass; the pass steps
        # through the first pass's fractions too, so that it prunes along the same path
        # (which channels go at a step depends a little on the steps before it).
        goal = {float(np.interp(k, removed, fractions)): k for k in levels if k > 0}
        steps = sorted(set(goal) | {float(r) for r in fractions[1:] if r < max(goal, default=0.0)})
        work = copy.deepcopy(model).eval()
        total = n_params(model)

        def compressed(level: float) -> Compressed:
            return Compressed(level, 1.0 - n_params(work) / total, lambda path, m=work: save_module(m, path), work)

        if 0.0 in levels:
            yield compressed(0.0)
        if not steps:
            return
        pruner = self._pruner(work, ctx, steps)
        for ratio in steps:
            with _quiet():
                pruner.step()
            if ratio in goal:
                yield compressed(goal[ratio])

    def _calibrate(self, model: nn.Module, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
        """Parameters removed at increasing channel fractions, measured on a pruned copy."""
        if self._table is None:
            # Channel fractions spaced so that parameters removed (~ 1 - (1 - r)^2) step evenly.
            goal = np.linspace(0, MAX_CHANNEL_FRACTION, CALIBRATION_STEPS + 1)[1:]
            ratios = list(1 - np.sqrt(1 - goal))
            ratios[-1] = MAX_CHANNEL_FRACTION
            work = copy.deepcopy(model).eval()
            total = n_params(model)
            pruner = self._pruner(work, ctx, ratios)
            removed = [0.0]
            for _ in ratios:
                with _quiet():
                    pruner.step()
                removed.append(1.0 - n_params(work) / total)
            self._table = (np.array([0.0, *ratios]), np.maximum.accumulate(np.array(removed)))
        return self._table

    def _pruner(self, work: nn.Module, ctx: Context, ratios: list[float]):
        tp = _torch_pruning()
        device = next(work.parameters()).device
        example = torch.zeros(1, 3, ctx.image_size, ctx.image_size, device=device)
        head = [m for m in work.modules() if isinstance(m, nn.Linear)][-1:]
        try:
            with _quiet():
                return tp.pruner.MagnitudePruner(
                    work, example, importance=tp.importance.MagnitudeImportance(p=2), global_pruning=True,
                    pruning_ratio=ratios[-1], iterative_steps=len(ratios),
                    iterative_pruning_ratio_scheduler=lambda _ratio, _steps: [0.0, *ratios],
                    ignored_layers=head)
        except Exception as exc:  # noqa: BLE001 - tracing fails in many ways for an unsupported graph
            raise ConfigError(f"prune.methods: torch-pruning cannot trace this {type(work).__name__} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                              f"remove channel from prune.methods or use a ResNet train.arch") from None


@contextlib.contextmanager
def _quiet():
    """torch-pruning warns about every unwrapped parameter and deprecated default. Its work
    (importance of every group, slicing of small tensors, a one-image trace) runs with one
    intra-op thread: many tiny ops gain nothing from a second thread and, on a loaded
    machine, wait at every op's barrier for a preempted one (measured: 15 ms instead of
    <1 ms per group importance on a loaded 2-core machine)."""
    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        yield
