"""The one place that decides numerics, for training and inference: the autocast dtype,
the gradient scaler, fp32 on CUDA (IEEE or TF32) and CUDA's deterministic kernels.

``train.precision`` is ``auto``, ``fp32``, ``bf16`` or ``fp16``. ``auto``: bf16 where the
hardware multiplies bf16 natively at full rate (a CUDA device with bf16, a CPU with AMX),
fp32 elsewhere; on a 2-core Xeon with AVX-512 BF16 but without AMX, bf16 autocast was
0.7-0.9x the speed of fp32 for the default model (issue 14), so ``auto`` never picks it there.
``benchmarks/bench_train_speed.py`` measures each precision's images/s on the machine it
runs on (part 1) to check this rule (``benchmarks/README.md``).
An explicit value is honoured, or refused with one error where the device would emulate
it (a silently slow path is worse than an error): bf16 on a CPU without AVX-512 BF16 or
AMX, fp16 on a CPU without AMX FP16, bf16 on a GPU without native bf16.
fp16 training runs with a gradient scaler (fp16's small range underflows gradients).
``torch.compile``'s kernels are cached apart per set of CPU kernel limits
(:func:`compiled_kernel_cache`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import Iterator

import torch

from cxrprune.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The environment variables that limit which CPU kernels torch and numpy use; the README's
# estimate of the AVX2-only kind on an AVX-512 machine sets them.
CPU_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_features() -> dict[str, bool]:
    """The CPU's lower-precision features that torch's kernels may use here.

    ``torch.cpu.get_capabilities`` reports the hardware, whatever the kernel limits: under
    ``ONEDNN_MAX_CPU_ISA=AVX2`` (or ``ATEN_CPU_CAPABILITY=avx2``, the way an AVX-512 machine
    estimates the AVX2-only kind) oneDNN may not use AMX or AVX-512, so bf16 would be emulated
    and ``auto`` must pick fp32, as it does on the AVX2-only machine itself.
    """
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    features = {name: bool(caps.get(name, False)) for name in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16",
                                                                "amx_fp16")}
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper() or "ALL"
    aten_avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    if not aten_avx512 or (isa != "ALL" and "AVX512" not in isa and "AVX10" not in isa):
        return dict.fromkeys(features, False)
    if isa != "ALL" and "AMX" not in isa:
        features.update(amx_bf16=False, amx_tile=False, amx_fp16=False)
    return features


def resolve_precision(setting: str, device: torch.device | str, key: str = "train.precision") -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``setting`` on ``device`` (see the module text)."""
    device = torch.device(device)
    if setting not in PRECISIONS:
        raise ConfigError(f"{key}: {setting!r} is not one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        if setting == "auto":
            return "bf16" if bf16 else "fp32"
        if setting == "bf16" and not bf16:
            raise ConfigError(f"{key}: bf16 on {torch.cuda.get_device_name(device)}, which has no native bf16; "
                              f"use fp16 or fp32 (or auto)")
        return setting
    if device.type != "cpu":
        if setting in ("auto", "fp32"):
            return "fp32"
        raise ConfigError(f"{key}: {setting} is supported on cpu and cuda only, not {device.type}; use fp32 or auto")
    f = cpu_features()
    if setting == "auto":
        return "bf16" if f["amx_bf16"] and f["amx_tile"] else "fp32"
    if setting == "bf16" and not (f["avx512_bf16"] or f["amx_bf16"]):
        raise ConfigError(f"{key}: bf16 on a CPU without AVX-512 BF16 or AMX is emulated and slower than fp32; "
                          f"use fp32 (or auto)")
    if setting == "fp16" and not f["amx_fp16"]:
        # With AVX-512 FP16 but no AMX FP16 (a Sapphire Rapids Xeon) a tiny ResNet10 training
        # took 32 s in fp16 vs 4 s in fp32 (one development run, issue 14): 8x, no fast fp16
        # convolutions there.
        raise ConfigError(f"{key}: fp16 on a CPU without AMX FP16 is several times slower than fp32; "
                          f"use fp32, bf16 or auto (fp16 is for GPUs)")
    return setting


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast to the resolved ``precision`` (``fp32``: nothing)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def autocast_option(setting: str) -> str | None:
    """A config's autocast setting (``prune.autocast``: ``none``, ``bf16`` or ``fp16``) as
    :func:`precision`'s ``autocast_dtype``: None (fp32) for ``none``."""
    return None if setting == "none" else setting


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (a disabled one passes ``step`` through).

    fp16 gradients of a loss of order 1e-2 underflow; bf16 has fp32's range and needs none.
    """
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


@contextlib.contextmanager
def precision(device: torch.device, autocast_dtype: str | None = None, allow_tf32: bool = False,
              deterministic: bool = True) -> Iterator[None]:
    """Numerics of one pass: autocast dtype (None: fp32) and, on CUDA, IEEE
    fp32 or TF32 and deterministic kernels or autotuned ones.

    ``deterministic`` (CUDA): cuDNN's deterministic algorithms and no autotuning, so the
    same seed gives the same weights and predictions on the same GPU (``train.deterministic``).
    Autotuning (``cudnn.benchmark``) times candidate kernels at the first call of each shape
    and keeps the fastest, which can differ between runs, and some of cuDNN's backward kernels
    accumulate with atomics in whatever order threads finish. The CPU path is deterministic
    either way. CUDA settings are restored on exit.
    """
    device = torch.device(device)
    if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None or one of {sorted(AUTOCAST_DTYPES)}, not {autocast_dtype!r}")
    with device_settings(device, allow_tf32, deterministic), (
            autocast(autocast_dtype, device) if autocast_dtype is not None else contextlib.nullcontext()):
        yield


@contextlib.contextmanager
def device_settings(device: torch.device | str, allow_tf32: bool = False, deterministic: bool = True
                    ) -> Iterator[None]:
    """The device half of :func:`precision`, without autocast: on CUDA, IEEE fp32 or TF32 and
    deterministic or autotuned kernels (restored on exit); nothing on other devices."""
    if torch.device(device).type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    saved = (cudnn.conv.fp32_precision, matmul.fp32_precision, cudnn.benchmark, cudnn.deterministic)
    mode = "tf32" if allow_tf32 else "ieee"
    cudnn.conv.fp32_precision = matmul.fp32_precision = mode
    cudnn.benchmark = not deterministic  # fixed shapes over many passes: autotune once, unless reproducible
    cudnn.deterministic = deterministic
    try:
        yield
    finally:
        cudnn.conv.fp32_precision, matmul.fp32_precision, cudnn.benchmark, cudnn.deterministic = saved


def compiled_kernel_cache() -> str | None:
    """Give torch.compile's on-disk cache a subfolder per set of CPU limits.

    Inductor picks its vector ISA from ``ATEN_CPU_CAPABILITY`` but its cache key does not
    include it: on an AMD EPYC with AVX-512 (torch 2.14.1), a compiled training under the AVX2
    limits that found the kernels of an earlier run without them in the same cache died with a
    segmentation fault, and passed with a cache of its own
    (``tests/test_train_speed.py::test_compiled_kernels_of_a_cpu_limited_run_are_cached_apart``).
    So a run with any of :data:`CPU_LIMITS` set caches under ``cpu-limits-<limits>`` inside
    the cache folder it would have used (``TORCHINDUCTOR_CACHE_DIR``, which torch itself sets
    to its default once it has looked, else ``<tmp>/torchinductor``). Returns that subfolder,
    or None where there are no limits.
    """
    limits = [f"{k}={os.environ[k].strip()}" for k in CPU_LIMITS if os.environ.get(k, "").strip()]
    if not limits:
        return None
    base = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "torchinductor")
    if os.path.basename(base).startswith("cpu-limits-"):  # set by an earlier call in this process
        base = os.path.dirname(base)
    folder = os.path.join(base, "cpu-limits-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(limits)))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder  # Inductor reads it at each compilation
    return folder
