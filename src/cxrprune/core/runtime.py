"""Where torch runs: device choice, thread pinning and the image cache on the device (the
numerics of a pass are :mod:`cxrprune.core.numerics`; glibc heap reuse on the CPU is
:mod:`cxrprune.core.heap`)."""

from __future__ import annotations

import os

import torch

from cxrprune.core.errors import CxrpruneError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CxrpruneError(f"train.device is {name!r} but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (0 keeps torch's default, or $OMP_NUM_THREADS)."""
    if threads > 0:
        torch.set_num_threads(threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))



def cache_on_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The uint8 test cache, copied once to a GPU for all 20 x methods passes when it fits
    in a quarter of the free memory (21,000 images at 256x256 are 1.4 GB); else as is."""
    if device.type != "cuda" or images.device == device:
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() > free // 4:
        return images
    return images.to(device)
