"""Batched inference over the uint8 image cache."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .augment import normalize, to_unit


@torch.inference_mode()
def predict_probs(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    """Sigmoid probabilities ``(N, C)`` float32 for uint8 images ``(N, S, S)``."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = normalize(to_unit(images[start:start + batch_size], device))
        out.append(torch.sigmoid(model(x)).float().cpu())
    return torch.cat(out).numpy()
