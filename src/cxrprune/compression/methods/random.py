"""``random``: the control. Unstructured pruning of the same weights as ``l1`` at the same
levels, the pruned set drawn at random (seeded: ``seed + RANDOM_PRUNE_SEED_OFFSET``).

Today's masks are nested (one permutation per seed; level k prunes its first
``round(k * n)`` entries), which tests the same number of weights as ``l1`` at every level.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from cxrprune.compression.masks import GlobalPruner
from cxrprune.compression.methods.base import Compressed, Method

# Offset that separates the random-pruning stream from the training stream of the same seed.
RANDOM_PRUNE_SEED_OFFSET = 1_000_003


class RandomPruning(Method):
    name = "random"

    def compress(self, model: nn.Module, levels: Sequence[float], seed: int) -> Iterator[Compressed]:
        pruner = GlobalPruner(model)
        pruner.reset("random", torch.Generator().manual_seed(seed + RANDOM_PRUNE_SEED_OFFSET))
        try:
            for level in sorted(levels):
                yield Compressed(float(level), model, pruner.apply(level))
        finally:
            pruner.restore()
