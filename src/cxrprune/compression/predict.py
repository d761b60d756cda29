"""Batched inference over the uint8 image cache.

Everything per batch is tensor work (slice of the uint8 cache -> device -> float,
normalised, channels-last), under ``torch.inference_mode``; the probabilities stay on the
device until the end of the pass (one transfer and no per-batch synchronisation on a GPU).

On the CPU every pass runs inside :func:`cxrprune.core.heap.cpu_heap_reuse` (no page
faults after the first batch, ~33 img/s at any batch size for a ResNet50 at 256 px on 2
cores). Batches are capped on the CPU (:func:`cpu_chunk`) to bound the memory that the heap
then holds. Nothing changes an arithmetic operation per image; outputs can differ from those
of a batch of another size by float rounding only (oneDNN may pick another blocking), ~1e-7.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.core.numerics import precision
from cxrprune.training.augment import normalize, to_unit


@torch.inference_mode()
def predict_probs(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, *,
                  autocast: str | None = None, allow_tf32: bool = False) -> np.ndarray:
    """Sigmoid probabilities ``(N, C)`` float32 for uint8 images ``(N, S, S)``.

    ``images`` may already be on ``device`` (the prune stage moves the cache to a GPU once).
    On the CPU, batches of at most :func:`cpu_chunk` images, inside :func:`cpu_heap_reuse`.
    """
    model.eval()
    device = torch.device(device)
    step = batch_size if device.type != "cpu" else min(batch_size, cpu_chunk(images.shape[-1]))
    out = []
    with precision(device, autocast, allow_tf32), (cpu_heap_reuse() if device.type == "cpu"
                                                   else contextlib.nullcontext()):
        for start in range(0, images.shape[0], step):
            x = normalize(to_unit(images[start:start + step], device))
            out.append(torch.sigmoid(model(x).float()))
    return torch.cat(out).cpu().numpy()


CPU_CHUNK_BYTES = 256 << 20  # cap on a CPU chunk's largest activation


def cpu_chunk(image_size: int) -> int:
    """Images per CPU forward chunk: the largest power of two whose biggest activation (a
    ResNet's 64 x S/2 x S/2 float stem output, 64 S^2 bytes per image) stays within
    :data:`CPU_CHUNK_BYTES` (S=256: 64 images, S=48: 1024)."""
    n = max(1, CPU_CHUNK_BYTES // (64 * image_size * image_size))
    return 1 << (n.bit_length() - 1)
