"""Batch input pipeline on tensors: uint8 cache -> augmented, normalised float batch.

Augmentation runs on whole batches (one ``affine_grid``/``grid_sample`` call), so there
is no per-image Python work and it runs on the GPU when the model does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cxrprune.training.models import IMAGENET_MEAN, IMAGENET_STD


def to_unit(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, S, S)`` -> float ``(B, 1, S, S)`` in [0, 1] on ``device``.

    The uint8 batch crosses to the device before conversion: 4x less to copy.
    """
    return batch_u8.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` in [0, 1] -> ImageNet-normalised ``(B, 3, S, S)``, channels-last.

    ``(x - mean) / std`` written straight into a channels-last tensor: the same values as
    computing it NCHW and converting, without the extra copy.
    """
    b, _, h, w = x.shape
    mean, std = _imagenet_stats(x.device, x.dtype)
    out = torch.empty((b, 3, h, w), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    torch.sub(x, mean, out=out)
    return out.div_(std)


_STATS: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def _imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    key = (device, dtype)
    if key not in _STATS:
        _STATS[key] = (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1).to(dtype),
                       torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1).to(dtype))
    return _STATS[key]


def augment(x: torch.Tensor, rotation: float, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and rotation in [-rotation, rotation] degrees, per image.

    Random numbers come from ``generator`` (on the CPU) so a seed fixes them on any device.
    With ``rotation == 0`` the flip is an exact pixel reversal (``grid_sample`` with a
    mirrored grid is not bit-exact); otherwise one ``affine_grid``/``grid_sample`` call does
    flip and rotation together for the whole batch.
    """
    b = x.shape[0]
    angles = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(rotation)
    flips = torch.ones(b)
    if hflip:
        flips = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    if rotation == 0:
        if not hflip:
            return x
        flip = (flips < 0).to(x.device).view(b, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)
    cos, sin = torch.cos(angles), torch.sin(angles)
    # Rotation composed with an x-flip: the flip negates the first column.
    theta = torch.stack([
        torch.stack([cos * flips, -sin, torch.zeros(b)], dim=1),
        torch.stack([sin * flips, cos, torch.zeros(b)], dim=1),
    ], dim=1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
