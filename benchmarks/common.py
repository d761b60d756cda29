"""Shared helpers of the benchmarks: source images, timing, tables, the machine, the record.

Each script's docstring says how it measures (same process or subprocesses, interleaved or
not). Every script runs inside :func:`record`, which writes its full printed output to
``benchmarks/results/<script>.txt`` and its figures to ``benchmarks/results/<script>.json``
(both atomically, at the end), with the CPU model and flags (``lscpu``), the command line,
torch's version and threads, and the CPU share it got: process CPU time (itself and its
waited-for children) over wall time. The machine is shared: a share well below the thread
count means other jobs took the cores; interleaving keeps the ratios fair, not the
absolute times.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results"

# The study's levels: 0.00, 0.05, ..., 0.95.
STUDY_LEVELS = [round(0.05 * i, 2) for i in range(20)]


def make_pngs(out_dir: str | os.PathLike, n: int, size: int = 1024, seed: int = 0) -> list[Path]:
    """Write ``n`` 8-bit grayscale PNGs of ``size`` x ``size`` that look (to a PNG codec)
    like chest X-rays: smooth anatomy-like shading plus fine noise, a few hundred kB each
    (NIH ChestX-ray14 averages ~400 kB). Existing files of the right name are reused."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for i in range(n):
        path = out_dir / f"{i:08d}_000.png"
        paths.append(path)
        if path.exists():
            rng.random(8)  # keep the stream aligned whether or not the file exists
            continue
        c = rng.uniform(-0.04, 0.04, size=4).astype(np.float32)
        body = 150 - 90 * ((xx - 0.5 - c[0]) ** 2 / 0.30 + (yy - 0.55 - c[1]) ** 2 / 0.55)
        lungs = sum(np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.48 - c[2]) / 0.24) ** 2))
                    for cx in (0.32 + c[3], 0.68 - c[3]))
        ribs = 6 * np.sin(yy * 60 + 8 * (xx - 0.5) ** 2)
        img = body - 70 * lungs + ribs + rng.normal(0, 3.0, size=(size, size)).astype(np.float32)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(path)
        rng.random(4)
    return paths


def timed(fn: Callable, *args, sync_cuda: bool = False, **kwargs) -> tuple[object, float]:
    """``(fn(*args, **kwargs), seconds)``. ``sync_cuda``: CUDA kernels run after their launch
    returns, so the clock starts and stops on an idle device (``torch.cuda.synchronize``)."""
    sync = _cuda_sync() if sync_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - start


def _cuda_sync() -> Callable[[], None]:
    import torch  # here: the CPU-only benchmarks time without importing torch for it

    return torch.cuda.synchronize


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """``median [min-max] (n=k)`` of a list of seconds or rates."""
    return f"{median(values):.4g} [{min(values):.4g}-{max(values):.4g}] (n={len(values)})"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    """A Markdown table (pasteable into benchmarks/README.md)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def machine() -> str:
    """One line: cores, CPU model, torch version and threads, GPU if any, load average."""
    import torch

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"machine: nproc={os.cpu_count()}, CPU={model}, {gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}, load average {load}")


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """High-water mark of the resident set size of this process (Linux ``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def lscpu() -> dict:
    """``lscpu``'s model name and flags (empty strings where it is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {"model_name": fields.get("Model name", "").strip(), "flags": fields.get("Flags", "").strip()}


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")


@contextlib.contextmanager
def record(script: str, args: object | None = None) -> Iterator[dict]:
    """Run a benchmark's main body; yields a dict the script fills with its figures.

    At the end (only if the body succeeded) writes ``results/<script>.txt`` (everything
    printed, then the machine footer) and ``results/<script>.json`` (the figures plus the
    machine), atomically, so a killed run leaves the previous outputs in place."""
    import torch

    from cxrprune.core.atomic import json_clean, write_text

    cpu = lscpu()
    figures: dict = {}
    buf = io.StringIO()
    old = sys.stdout
    sys.stdout = _Tee(old, buf)
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        print(machine())
        yield figures
    finally:
        sys.stdout = old
    wall, cpu_s = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    meta = {
        "script": f"benchmarks/{Path(sys.argv[0]).name}",
        "argv": sys.argv[1:],
        "args": vars(args) if args is not None and hasattr(args, "__dict__") else None,
        "started_utc": started,
        "cpu_model": cpu["model_name"],
        "cpu_flags": cpu["flags"],
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # the kernels torch actually dispatched to, and any limit set on them (an AVX2 estimate
        # on an AVX-512 machine is labelled one by these)
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_limits": {k: os.environ[k] for k in KERNEL_LIMITS if k in os.environ},
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "wall_s": wall,
        "cpu_s": cpu_s,
        "cpu_share": cpu_s / max(wall, 1e-9),
    }
    footer = (f"\n--- run: {started}, wall {wall:.1f} s, CPU {cpu_s:.1f} s (this process and its children) -> "
              f"CPU share {meta['cpu_share']:.2f} of {os.cpu_count()} cores; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads\nCPU: {cpu['model_name']}\nflags: {cpu['flags']}\n"
              f"command: python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}\n")
    print(footer, end="")
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Serialise the record before writing anything, so a value JSON cannot hold raises here and
    # does not leave a new .txt beside the previous .json.
    record_json = json.dumps(json_clean({"machine": meta, "figures": figures}), indent=2, allow_nan=False) + "\n"
    write_text(RESULTS / f"{script}.txt", buf.getvalue() + footer)
    write_text(RESULTS / f"{script}.json", record_json)
