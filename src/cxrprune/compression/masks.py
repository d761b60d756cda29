"""Global unstructured pruning with nested masks from a single sort per model.

``torch.nn.utils.prune.global_unstructured`` concatenates every weight, runs ``topk`` over
all of them for each level and multiplies weight by mask in a forward pre-hook on every
call. Pruning sets are nested (the weights pruned at k are also pruned at k' > k), so one
ordering of the weights serves every level: level k prunes the first ``round(k * n)``
entries of that order. For ``l1`` the order is ascending |w| (ties broken by position, as a
stable sort would); for ``random`` it is a seeded permutation. The weights themselves are
zeroed, so inference runs with no hooks and no model rebuild.

The order is never materialised as an index array (23.5M int64 = 188 MB for a ResNet50,
and a stable ``torch.sort`` of that size takes seconds on a CPU). For ``l1`` one sort of the
|w| *values* gives, for any level, the largest pruned magnitude ``v``: the level prunes every
weight with ``|w| < v`` and the first ``r`` weights (in concatenation order) with ``|w| == v``,
which is exactly the first ``round(k * n)`` entries of the stable order. For ``random`` the
permutation is stored as each weight's rank (int32), and a level prunes ``rank < round(k * n)``.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from cxrprune.training.models import prunable_parameters

METHODS = ("l1", "random")
_TIE_CHUNK = 1 << 20  # elements per step of the tie scan


def n_pruned(level: float, n_weights: int) -> int:
    """How many weights level k prunes: ``round(k * n)``, as torch's pruning computes it."""
    return round(level * n_weights)


class GlobalPruner:
    """Applies increasing sparsity levels to a model's Conv2d/Linear weights in place.

    The original weights are kept in one flat buffer (in the same concatenation order as
    ``global_unstructured``, each parameter in its logical NCHW order whatever its memory
    format); :meth:`reset` restores them, :meth:`apply` zeroes the weights of the next
    level directly in the model's parameters, in place (no per-level allocation of
    weight-sized buffers: on a CPU, page faults on fresh 100 MB buffers cost more than
    the arithmetic).
    """

    def __init__(self, model: nn.Module):
        self.params = [getattr(m, name) for m, name in prunable_parameters(model)]
        on_cpu = not self.params or self.params[0].device.type == "cpu"
        with torch.no_grad(), (single_thread() if on_cpu else contextlib.nullcontext()):
            self.original = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.sizes = [p.numel() for p in self.params]
        self.n = self.original.numel()
        self.method: str | None = None
        self.done = 0
        self._sorted: torch.Tensor | None = None   # l1: |original| ascending (values only)
        self._rank: torch.Tensor | None = None     # random: position of each weight in the permutation

    def reset(self, method: str, generator: torch.Generator | None = None) -> None:
        """Restore the dense weights and compute the pruning order of ``method``."""
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
        self._sorted = self._rank = None
        self.method = method
        self.done = 0
        with torch.no_grad(), self._threads():
            for p, orig in zip(self.params, self._original_views()):
                p.copy_(orig)  # keeps p's memory format
            if method == "l1":
                self._sorted = sorted_abs(self.original)
            else:
                self._rank = permutation_rank(self.n, generator).to(self.original.device)

    def restore(self) -> None:
        """Put the dense weights back into the model (the order is kept)."""
        with torch.no_grad(), self._threads():
            for p, orig in zip(self.params, self._original_views()):
                p.copy_(orig)  # keeps p's memory format
        self.done = 0

    def apply(self, level: float) -> float:
        """Prune to ``level`` (levels must not decrease); returns the measured sparsity."""
        if self.method is None:
            raise RuntimeError("call reset(method) before apply(level)")
        target = n_pruned(level, self.n)
        if target < self.done:
            raise ValueError(f"levels must increase: {level} prunes fewer weights than the previous level")
        if target > self.done:
            # Levels are nested, so zeroing this level's set over the previous level's
            # weights gives the same weights as zeroing it over the dense ones.
            with torch.no_grad(), self._threads():
                if self.method == "random":
                    for p, rank in zip(self.params, torch.split(self._rank, self.sizes)):
                        p.masked_fill_((rank < target).view(p.shape), 0.0)
                else:
                    self._apply_l1(target)
        self.done = target
        return self.measured_sparsity()

    def measured_sparsity(self) -> float:
        """Fraction of exactly-zero weights across all pruned parameters, read from the model."""
        with self._threads():
            return sum(count_zeros(p) for p in self.params) / self.n

    def keep_masks(self) -> list[torch.Tensor]:
        """Boolean keep-masks (parameter shape, logical order) of the current level."""
        out = []
        if self.method == "random":
            for p, rank in zip(self.params, torch.split(self._rank, self.sizes)):
                out.append((rank >= self.done).view(p.shape))
            return out
        if self.done == 0:
            return [torch.ones(p.shape, dtype=torch.bool, device=p.device) for p in self.params]
        v, below, ties = _threshold(self._sorted, self.done)
        r = self.done - below
        for orig, tie in zip(self._original_views(), self._tie_positions(v, r, ties)):
            keep = orig.abs() > v if r == ties else orig.abs() >= v
            keep.view(-1)[tie] = False
            out.append(keep)
        return out

    def _apply_l1(self, target: int) -> None:
        """Zero the first ``target`` weights of the stable ascending-|w| order, in place.

        ``hardshrink(w, v)`` zeroes exactly the weights with ``|w| <= v`` and returns the
        others bit for bit; where only some of the weights tied at ``v`` are pruned, the
        threshold is the next float below ``v`` and the tied ones are zeroed by position.
        """
        v, below, ties = _threshold(self._sorted, target)
        r = target - below
        cut = v if r == ties else float(np.nextafter(np.float32(v), np.float32(0)))
        for p, tie in zip(self.params, self._tie_positions(v, r, ties)):
            torch.ops.aten.hardshrink.out(p, cut, out=p)  # elementwise, safe in place
            if tie.numel():
                _flat_view(p)[_storage_index(p, tie)] = 0.0

    def _tie_positions(self, v: float, r: int, ties: int) -> list[torch.Tensor]:
        """Per parameter, the flat logical positions of the first ``r`` of the ``ties``
        weights with ``|w| == v`` (empty everywhere when all of them are pruned)."""
        empty = torch.empty(0, dtype=torch.long, device=self.original.device)
        if r == ties:
            return [empty] * len(self.params)
        # Scan in chunks and stop at the r-th tie: no weight-sized temporaries, and
        # usually (r = 1 of 2 ties) only part of the weights is read.
        found, start = [], 0
        for chunk in torch.split(self.original, _TIE_CHUNK):
            hits = torch.nonzero(chunk.abs() == v).flatten()
            if hits.numel():
                found.append(hits + start)
                if sum(h.numel() for h in found) >= r:
                    break
            start += chunk.numel()
        pos = torch.cat(found)[:r]
        out, offset = [], 0
        for k in self.sizes:
            out.append(pos[(pos >= offset) & (pos < offset + k)] - offset)
            offset += k
        return out

    def _threads(self) -> contextlib.AbstractContextManager:
        """On the CPU, one intra-op thread for the pruner's memory-bound passes.

        They gain nothing from a second thread, and with more runnable threads than cores
        (a shared machine) every parallel op waits at its barrier for a preempted thread:
        measured 0.4-0.8 s single-threaded vs 1.7-10 s with 2 threads for 20 levels of a
        ResNet50 on a loaded 2-core machine.
        """
        return single_thread() if self.original.device.type == "cpu" else contextlib.nullcontext()

    def _original_views(self) -> list[torch.Tensor]:
        return [s.view(p.shape) for s, p in zip(torch.split(self.original, self.sizes), self.params)]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, restoring the previous count."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sorted_abs(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` sorted ascending, values only (no index array).

    On the CPU numpy's vectorised sort is used: over 20x faster than torch's stable sort
    of 23.5M floats on 2 cores, and without its int64 index array.
    """
    if x.device.type == "cpu":
        arr = np.abs(x.numpy())
        arr.sort()
        return torch.from_numpy(arr)
    return torch.sort(x.abs()).values


def _threshold(sorted_values: torch.Tensor, target: int) -> tuple[float, int, int]:
    """For the first ``target`` (>= 1) entries of the stable ascending order: the largest
    pruned magnitude ``v``, how many magnitudes are below ``v`` and how many equal it."""
    if sorted_values.device.type == "cpu":
        arr = sorted_values.numpy()
        v = arr[target - 1]
        below = int(np.searchsorted(arr, v, side="left"))
        upto = int(np.searchsorted(arr, v, side="right"))
        return float(v), below, upto - below
    v = sorted_values[target - 1:target]
    below = int(torch.searchsorted(sorted_values, v, side="left"))
    upto = int(torch.searchsorted(sorted_values, v, side="right"))
    return float(v), below, upto - below


def count_zeros(p: torch.Tensor) -> int:
    """Exact zeros in ``p`` (``-0.0`` included); on the CPU without a temporary mask."""
    p = p.detach()
    if p.device.type == "cpu" and p.dtype == torch.float32 and _is_dense(p):
        return p.numel() - int(np.count_nonzero(_flat_view(p).numpy()))
    return p.numel() - int(torch.count_nonzero(p))


def _is_dense(p: torch.Tensor) -> bool:
    return p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last))


def _flat_view(p: torch.Tensor) -> torch.Tensor:
    """A 1-D view of ``p``'s storage in memory order (``p`` contiguous or channels-last)."""
    if p.is_contiguous():
        return p.view(-1)
    if _is_dense(p):
        return p.permute(0, 2, 3, 1).reshape(-1)  # channels-last memory order: a view
    raise ValueError("parameter is neither contiguous nor channels-last")


def _storage_index(p: torch.Tensor, logical: torch.Tensor) -> torch.Tensor:
    """Map flat logical (NCHW) positions of ``p`` to positions in :func:`_flat_view` order."""
    if p.is_contiguous():
        return logical
    n, c, h, w = p.shape
    i, rest = logical // (c * h * w), logical % (c * h * w)
    ch, rest = rest // (h * w), rest % (h * w)
    y, x = rest // w, rest % w
    return ((i * h + y) * w + x) * c + ch


def permutation_rank(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``rank[i]``: the position of weight ``i`` in a uniformly random order of the ``n`` weights.

    The inverse of a uniform random permutation is itself uniform, so ``torch.randperm``'s
    output serves as the ranks directly (no inverse scatter: half the cost per level)."""
    dtype = torch.int32 if n < 2**31 else torch.int64
    return torch.randperm(n, generator=generator, dtype=dtype, device="cpu")


def masks_for_levels(model: nn.Module, levels: Iterable[float], method: str = "l1",
                     generator: torch.Generator | None = None) -> dict[float, list[torch.Tensor]]:
    """Boolean keep-masks per level and parameter (for tests and benchmarks)."""
    pruner = GlobalPruner(model)
    pruner.reset(method, generator)
    out = {}
    for k in levels:
        pruner.apply(k)
        out[k] = pruner.keep_masks()
    pruner.reset(method, generator)
    return out
