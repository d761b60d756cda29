"""``random``: the control. Unstructured pruning of the same weights as ``l1`` at the same
levels, the pruned set drawn at random (seeded: ``seed + RANDOM_PRUNE_SEED_OFFSET``).

``prune.random_masks``:

- ``independent`` (default, as in the authors' code, which calls
  ``global_unstructured(..., RandomUnstructured)`` on the dense model at every level): each
  level draws its own mask from the dense model (one permutation per level, drawn in
  increasing level order from the seeded stream), so the masks of two levels are unrelated.
- ``nested``: one permutation per seed; level k prunes its first ``round(k * n)`` entries, so
  the weights pruned at k stay pruned at every k' > k (as ``l1``'s masks are).

Either way exactly ``round(k * n)`` weights are pruned at level k, as ``l1`` prunes.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from cxrprune.compression.artifacts import save_sparse
from cxrprune.compression.masks import GlobalPruner
from cxrprune.compression.methods.base import Compressed, Context, Method

# Offset that separates the random-pruning stream from the training stream of the same seed.
RANDOM_PRUNE_SEED_OFFSET = 1_000_003


class RandomPruning(Method):
    name = "random"

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        gen = torch.Generator().manual_seed(ctx.seed + RANDOM_PRUNE_SEED_OFFSET)
        nested = ctx.prune.random_masks == "nested"
        pruner = GlobalPruner(model)
        if nested:
            pruner.reset("random", gen)
        try:
            for level in sorted(levels):
                if not nested:
                    pruner.reset("random", gen)  # the dense weights back, a new permutation
                yield Compressed(float(level), pruner.apply(level), lambda path: save_sparse(model, path), model)
        finally:
            pruner.restore()
