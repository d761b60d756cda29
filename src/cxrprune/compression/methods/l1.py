"""``l1``: one-shot global unstructured magnitude pruning, the paper's method.

Every Conv2d/Linear weight of the network competes in one ranking by |w|; level k zeroes
the ``round(k * n)`` smallest (:class:`~cxrprune.compression.masks.GlobalPruner`, identical
masks to ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``). No
fine-tuning. Levels are nested: the weights pruned at k stay pruned at every k' > k.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from torch import nn

from cxrprune.compression.artifacts import save_sparse
from cxrprune.compression.masks import GlobalPruner
from cxrprune.compression.methods.base import Compressed, Context, Method


class GlobalL1(Method):
    name = "l1"

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        pruner = GlobalPruner(model)
        pruner.reset("l1")
        try:
            for level in sorted(levels):
                yield Compressed(float(level), pruner.apply(level), lambda path: save_sparse(model, path), model)
        finally:
            pruner.restore()
