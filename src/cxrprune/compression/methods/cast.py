"""``fp16`` and ``bf16``: every weight and buffer cast to half precision (one level, 0.0).

The deployable form is the cast model run in that dtype: weights, activations and
arithmetic in fp16/bf16 on the stage's device (on a CPU through oneDNN's half-precision
kernels where the CPU has them, else torch's reference ones), the logits cast back to
float32 only for the sigmoid. Casting the weights back to fp32 before predicting would
measure only the rounding of the weights, not the model a deployment would run. Its file is
the cast state dict (half the bytes of fp32).
"""

from __future__ import annotations

import copy
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cxrprune.compression.artifacts import save_state_dict
from cxrprune.compression.masks import count_zeros
from cxrprune.compression.methods.base import Compressed, Context, Method
from cxrprune.compression.predict import cpu_chunk
from cxrprune.training.augment import normalize, to_unit
from cxrprune.training.models import prunable_parameters


class _Cast(Method):
    dtype: torch.dtype

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        half = copy.deepcopy(model).to(self.dtype).eval()
        weights = [getattr(m, name) for m, name in prunable_parameters(half)]
        # Weights too small for the dtype become 0: measured, not assumed.
        measured = sum(count_zeros(w) for w in weights) / sum(w.numel() for w in weights)
        batch = ctx.prune.batch_size

        @torch.inference_mode()
        def predict(images: torch.Tensor) -> np.ndarray:
            device = next(half.parameters()).device
            step = batch if device.type != "cpu" else min(batch, cpu_chunk(images.shape[-1]))
            out = [torch.sigmoid(half(normalize(to_unit(images[i:i + step], device)).to(self.dtype)).float())
                   for i in range(0, images.shape[0], step)]
            return torch.cat(out).cpu().numpy()

        yield Compressed(0.0, measured, lambda path: save_state_dict(half, path), predict=predict,
                         nonzero_params=int(sum(int(torch.count_nonzero(p)) for p in half.parameters())))


class Fp16Cast(_Cast):
    name = "fp16"
    dtype = torch.float16


class Bf16Cast(_Cast):
    name = "bf16"
    dtype = torch.bfloat16
