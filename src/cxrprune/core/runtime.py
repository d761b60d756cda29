"""Where and how torch runs: device choice, thread pinning, the numerics of a pass, and
glibc heap reuse on the CPU.

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


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

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


@contextlib.contextmanager
def precision(device: torch.device, autocast: str | None = None, allow_tf32: bool = False) -> Iterator[None]:
    """Numerics of one inference pass: autocast dtype (None = fp32) and TF32 on CUDA.

    CUDA settings (TF32, cuDNN autotuning) are restored on exit.
    """
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None or one of {sorted(AUTOCAST_DTYPES)}, not {autocast!r}")
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_cuda_fp32_precision("tf32" if allow_tf32 else "ieee"))
        if autocast is not None:
            stack.enter_context(torch.autocast(device.type, dtype=AUTOCAST_DTYPES[autocast]))
        yield


@contextlib.contextmanager
def _cuda_fp32_precision(mode: str) -> Iterator[None]:
    conv = torch.backends.cudnn.conv
    matmul = torch.backends.cuda.matmul
    saved = (conv.fp32_precision, matmul.fp32_precision, torch.backends.cudnn.benchmark)
    conv.fp32_precision = mode
    matmul.fp32_precision = mode
    torch.backends.cudnn.benchmark = True  # fixed shapes over 20+ passes: autotune once
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision, torch.backends.cudnn.benchmark = saved
