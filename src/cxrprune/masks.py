"""Global unstructured pruning with nested masks from a single sort per model.

``torch.nn.utils.prune.global_unstructured`` concatenates every weight, runs ``topk`` over
all of them for each level and multiplies weight by mask in a forward pre-hook on every
call. Pruning sets are nested (the weights pruned at k are also pruned at k' > k), so one
ordering of the weights serves every level: level k zeroes the first ``round(k * n)``
entries of that order. For ``l1`` the order is ascending |w| (a stable sort, so ties break
by position); for ``random`` it is a seeded permutation. The weights themselves are
zeroed, so inference runs with no hooks and no model rebuild.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .models import prunable_parameters

METHODS = ("l1", "random")


def n_pruned(level: float, n_weights: int) -> int:
    """How many weights level k prunes: ``round(k * n)``, as torch's pruning computes it."""
    return round(level * n_weights)


class GlobalPruner:
    """Applies increasing sparsity levels to a model's Conv2d/Linear weights in place.

    The original weights are kept in one flat buffer (in the same concatenation order as
    ``global_unstructured``); :meth:`reset` restores them, :meth:`apply` zeroes the next
    slice of the order and copies the flat buffer back into the model's parameters.
    """

    def __init__(self, model: nn.Module):
        self.params = [getattr(m, name) for m, name in prunable_parameters(model)]
        with torch.no_grad():
            self.original = torch.cat([p.detach().flatten() for p in self.params])
        self.flat = self.original.clone()
        self.n = self.flat.numel()
        self.order: torch.Tensor | None = None
        self.done = 0

    def reset(self, method: str, generator: torch.Generator | None = None) -> None:
        """Restore the dense weights and compute the pruning order of ``method``."""
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
        self.flat.copy_(self.original)
        self.order = pruning_order(self.original, method, generator)
        self.done = 0
        self._write_back()

    def apply(self, level: float) -> float:
        """Prune to ``level`` (levels must not decrease); returns the measured sparsity."""
        if self.order is None:
            raise RuntimeError("call reset(method) before apply(level)")
        target = n_pruned(level, self.n)
        if target < self.done:
            raise ValueError(f"levels must increase: {level} prunes fewer weights than the previous level")
        with torch.no_grad():
            self.flat[self.order[self.done:target]] = 0
        self.done = target
        self._write_back()
        return self.measured_sparsity()

    def measured_sparsity(self) -> float:
        """Fraction of exactly-zero weights across all pruned parameters, read from the model."""
        zeros = sum(int((p == 0).sum()) for p in self.params)
        return zeros / self.n

    def _write_back(self) -> None:
        offset = 0
        with torch.no_grad():
            for p in self.params:
                k = p.numel()
                p.copy_(self.flat[offset:offset + k].view(p.shape))  # keeps p's memory format
                offset += k


def pruning_order(weights: torch.Tensor, method: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flat indices in the order they are pruned."""
    if method == "l1":
        return torch.sort(weights.abs(), stable=True).indices
    if method == "random":
        return torch.randperm(weights.numel(), generator=generator, device="cpu").to(weights.device)
    raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")


def masks_for_levels(model: nn.Module, levels: Iterable[float], method: str = "l1",
                     generator: torch.Generator | None = None) -> dict[float, list[torch.Tensor]]:
    """Boolean keep-masks per level and parameter (for tests and benchmarks)."""
    pruner = GlobalPruner(model)
    pruner.reset(method, generator)
    out = {}
    for k in levels:
        pruner.apply(k)
        keep = torch.ones(pruner.n, dtype=torch.bool)
        keep[pruner.order[:pruner.done]] = False
        out[k] = [m.view(p.shape) for m, p in zip(torch.split(keep, [p.numel() for p in pruner.params]),
                                                   pruner.params)]
    pruner.reset(method, generator)
    return out
