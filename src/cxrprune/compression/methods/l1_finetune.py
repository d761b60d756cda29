"""``l1_finetune``: global L1 pruning (as ``l1``) at each level, then
``prune.finetune_epochs`` epochs of training with the mask held fixed (opt-in: it costs
training time). Does fine-tuning give the rare classes back?

Each level starts from the seed's dense model: ``l1``'s mask at that level is applied, then
the model is trained on the same seed's training split with the training loop's own epoch
(:func:`cxrprune.training.loop.train_epoch`: the same loss, augmentation, batch size and
learning rate as ``train``, a fresh Adam), the mask held by
``torch.nn.utils.prune.custom_from_mask`` (the forward uses ``weight_orig * mask``, so pruned
weights are zero in every step and get no gradient) and made permanent afterwards. The
shuffling stream is seeded with ``seed + FINETUNE_SEED_OFFSET`` at every level. Level 0.0 is
the dense model, not fine-tuned (nothing was pruned), so its block equals ``l1``'s.
"""

from __future__ import annotations

import copy
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from cxrprune.compression.artifacts import save_sparse
from cxrprune.compression.masks import GlobalPruner
from cxrprune.compression.methods.base import Compressed, Context, Method
from cxrprune.training.loop import adam, train_epoch
from cxrprune.training.models import prunable_parameters

FINETUNE_SEED_OFFSET = 3_000_017


class FinetunedL1(Method):
    name = "l1_finetune"

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        dense = copy.deepcopy(model.state_dict())
        pruner = GlobalPruner(model)
        pruner.reset("l1")
        data = None
        try:
            for level in sorted(levels):
                model.load_state_dict(dense)
                pruner.restore()
                measured = pruner.apply(level)
                if level > 0 and ctx.prune.finetune_epochs > 0:
                    if data is None:
                        images, labels = ctx.split("train")
                        data = torch.from_numpy(images), torch.from_numpy(labels)
                    finetune(model, pruner.keep_masks(), data, ctx)
                    measured = pruner.measured_sparsity()
                model.eval()
                yield Compressed(float(level), measured, lambda path: save_sparse(model, path), model)
        finally:
            model.load_state_dict(dense)
            model.eval()


def finetune(model: nn.Module, keep: list[torch.Tensor], data: tuple[torch.Tensor, torch.Tensor],
             ctx: Context) -> None:
    """``prune.finetune_epochs`` training epochs of ``model`` with the ``keep`` masks fixed."""
    pairs = prunable_parameters(model)  # (module, parameter name): attention in-projections too
    modules = [m for m, _ in pairs]
    orders = [list(m._parameters) for m in modules]
    for (m, name), mask in zip(pairs, keep, strict=True):
        torch_prune.custom_from_mask(m, name, mask)
    gen = torch.Generator().manual_seed(ctx.seed + FINETUNE_SEED_OFFSET)
    optimizer = adam(model.parameters(), ctx.train)
    loss_fn = nn.BCEWithLogitsLoss()
    try:
        for _ in range(ctx.prune.finetune_epochs):
            train_epoch(model, optimizer, loss_fn, data[0], data[1], ctx.train, gen, ctx.device)
    finally:
        for (m, name), order in zip(pairs, orders):
            torch_prune.remove(m, name)  # weight = weight_orig * mask, a plain parameter again
            # remove() re-registers the weight last; put it back in its place (state-dict order)
            params = m._parameters
            params.update([(k, params.pop(k)) for k in order])
    model.eval()
