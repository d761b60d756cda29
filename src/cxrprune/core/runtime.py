"""Where torch runs: device choice, thread pinning, the image cache on the device, and glibc
heap reuse on the CPU (the numerics of a pass are :mod:`cxrprune.core.numerics`).

Why heap reuse: on the CPU the time of a ResNet forward at large batches is dominated not by
arithmetic but by the kernel zeroing fresh pages. glibc serves every allocation above its
mmap threshold (at most 32 MB) with a new ``mmap`` and gives it back with ``munmap``, so the
activations of every batch page-fault in again (ResNet50 at 256 px, batch 64: 1.7M page
faults and 3 s of system time per 64 images, 17 img/s on 2 cores). Inference and training
therefore run with glibc told to serve everything from its heap and to keep freed memory
there for the duration of the pass (:func:`cpu_heap_reuse`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from typing import Iterator

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



_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_heap_lock = threading.Lock()
_heap_depth = 0


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc, not musl: mallopt's parameters are glibc's
        return libc
    except (OSError, AttributeError):
        return None

_LIBC = _glibc()


@contextlib.contextmanager
def cpu_heap_reuse() -> Iterator[None]:
    """glibc only (a no-op elsewhere): for the duration of the block, serve every
    allocation from the heap (no per-allocation ``mmap``) and never trim it, so memory freed
    by one batch's activations is reused by the next without page faults.

    Process-wide while active (nested blocks share the outermost one). On exit: glibc's
    default mmap count, mmap threshold 32 MB and trim threshold 64 MB (where its own dynamic
    tuning settles in a process that frees large tensors), and the retained memory goes
    back to the system (``malloc_trim``).
    """
    global _heap_depth
    if _LIBC is None:
        yield
        return
    with _heap_lock:
        _heap_depth += 1
        if _heap_depth == 1:
            _LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            _LIBC.mallopt(_M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_depth -= 1
            if _heap_depth == 0:
                _LIBC.mallopt(_M_MMAP_MAX, 65536)
                _LIBC.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
                _LIBC.malloc_trim(0)


def cache_on_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The uint8 test cache, copied once to a GPU for all 20 x methods passes when it fits
    in a quarter of the free memory (21,000 images at 256x256 are 1.4 GB); else as is."""
    if device.type != "cuda" or images.device == device:
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() > free // 4:
        return images
    return images.to(device)
