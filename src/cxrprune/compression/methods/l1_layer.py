"""``l1_layer``: layer-wise (local) unstructured magnitude pruning.

Every Conv2d/Linear weight is pruned to the same fraction: level k zeroes the
``round(k * n_layer)`` smallest |w| of each layer (the masks of
``torch.nn.utils.prune.l1_unstructured(module, "weight", amount=k)`` applied to every layer;
ties broken by position). Unlike global ``l1``, no layer can lose more than the others, so
the small first and last layers keep the same share of their weights. Levels are nested.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cxrprune.compression.artifacts import save_sparse
from cxrprune.compression.masks import count_zeros, n_pruned, single_thread
from cxrprune.compression.methods.base import Compressed, Context, Method
from cxrprune.training.models import prunable_parameters


class LayerwiseL1(Method):
    name = "l1_layer"

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        params = [getattr(m, name) for m, name in prunable_parameters(model)]
        with torch.no_grad(), single_thread():
            originals = [p.detach().clone() for p in params]
            # Per layer, the flat positions in ascending |w| (stable): level k zeroes a prefix.
            orders = [torch.from_numpy(np.argsort(np.abs(o.cpu().reshape(-1).numpy()), kind="stable"))
                      for o in originals]
        total = sum(p.numel() for p in params)
        try:
            for level in sorted(levels):
                with torch.no_grad(), single_thread():
                    for p, orig, order in zip(params, originals, orders):
                        p.copy_(orig)
                        cut = order[:n_pruned(level, p.numel())].to(p.device)
                        flat = p.view(-1) if p.is_contiguous() else None
                        if flat is not None:
                            flat[cut] = 0.0
                        else:  # channels-last: zero through a logical-order copy
                            w = orig.clone().reshape(-1)
                            w[cut] = 0.0
                            p.copy_(w.view(p.shape))
                    measured = sum(count_zeros(p) for p in params) / total
                yield Compressed(float(level), measured, lambda path: save_sparse(model, path), model)
        finally:
            with torch.no_grad():
                for p, orig in zip(params, originals):
                    p.copy_(orig)
