"""Measured efficiency of the compressed models actually produced, one row per (method, level).

``data/predictions/<name>/efficiency-seed-<s>.csv`` (``Layout.efficiency_file``), written by
``prune@<seed>``, columns :data:`COLUMNS`:

- ``nonzero_params``: non-zero entries of every parameter of the produced model (torch:
  weights, biases, BatchNorm affine; ONNX: the initialisers without quantisation scales and
  zero points), counted on the model, never derived from the level;
- ``bytes``: size of the deployable file written to a temporary folder
  (:mod:`cxrprune.compression.artifacts`);
- ``engine``: ``torch-cpu``, ``torch-cuda`` or ``onnxruntime-cpu``; ``threads``: intra-op
  threads of the timing (``prune.efficiency_threads`` on the CPU);
- ``latency_ms_b1``: median over ``prune.latency_rounds`` runs (after a warm-up) of one
  prediction of one test image, uint8 in, probabilities out, in milliseconds;
  ``latency_ratio`` with ``latency_ratio_lo``/``_hi``: the median over those rounds of this
  model's time over the dense model's, timed *interleaved* (dense, this, this, dense, ...), so
  that drift, frequency scaling and a busy neighbour hit both alike, and the sign test's 95%
  interval of that median (:func:`cxrprune.stats.order.median_interval`): an interval that
  contains 1 means no latency difference from the dense model was shown (1 for the dense row);
  ``images_per_s_b64``: 64 / median time of ``prune.efficiency_repeats`` predictions of 64
  test images. Measured only
  when the stage is asked to (the first seed in ``seeds``: latency does not depend on the
  seed), NaN otherwise. On a GPU the clock is read after ``torch.cuda.synchronize``.

The row ``method=dense, level=0.0`` is the unpruned fp32 model (its state dict's bytes).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from cxrprune.compression.artifacts import count_nonzero_params
from cxrprune.compression.methods.base import Compressed
from cxrprune.stats.order import median_interval

COLUMNS = ["seed", "method", "level", "nonzero_params", "bytes", "engine", "threads", "latency_ms_b1",
           "latency_ratio", "latency_ratio_lo", "latency_ratio_hi", "images_per_s_b64"]
THROUGHPUT_BATCH = 64


def artifact_bytes(c: Compressed) -> int:
    """Bytes of ``c``'s deployable file, written to a temporary folder and measured there."""
    with tempfile.TemporaryDirectory(prefix="cxrprune-artifact-") as tmp:
        path = Path(tmp) / "model"
        c.save(path)
        return path.stat().st_size


def engine_name(c: Compressed, device: torch.device) -> str:
    return "onnxruntime-cpu" if c.engine == "onnxruntime" else f"torch-{torch.device(device).type}"


def measure(seed: int, method: str, c: Compressed, predict: Callable[[torch.Tensor], np.ndarray],
            images: torch.Tensor, device: torch.device, *, threads: int, repeats: int, timed: bool,
            rounds: int = 15, reference: Callable[[torch.Tensor], np.ndarray] | None = None) -> dict:
    """One row of the efficiency table for the compressed model ``c``, predicted with ``predict``;
    ``reference`` is the dense model's prediction, timed interleaved with it (None: ``c`` is
    the dense model, its ratio is 1)."""
    engine = engine_name(c, device)
    nonzero = count_nonzero_params(c.model) if c.model is not None else int(c.nonzero_params)
    row = {"seed": seed, "method": method, "level": float(c.level), "nonzero_params": nonzero,
           "bytes": artifact_bytes(c), "engine": engine,
           "threads": threads if engine.endswith("cpu") else 0,
           "latency_ms_b1": float("nan"), "latency_ratio": float("nan"), "latency_ratio_lo": float("nan"),
           "latency_ratio_hi": float("nan"), "images_per_s_b64": float("nan")}
    if timed:
        one = images[:1]
        batch = images[torch.arange(THROUGHPUT_BATCH) % images.shape[0]]  # 64 test images (repeated if fewer)
        sync = torch.cuda.synchronize if engine == "torch-cuda" else (lambda: None)
        with _threads(engine, threads):
            if reference is None:
                times = np.asarray(timed_runs(lambda: predict(one), rounds, sync))
                ratios = np.ones(1)
                lo = hi = 1.0
            else:
                times, ref_times = paired_runs(lambda: predict(one), lambda: reference(one), rounds, sync)
                ratios = times / ref_times
                lo, hi = median_interval(ratios)
            row.update(latency_ms_b1=1000.0 * float(np.median(times)), latency_ratio=float(np.median(ratios)),
                       latency_ratio_lo=lo, latency_ratio_hi=hi)
            row["images_per_s_b64"] = THROUGHPUT_BATCH / median_seconds(lambda: predict(batch), repeats, sync)
    return row


def paired_runs(fn: Callable[[], object], ref: Callable[[], object], rounds: int, sync: Callable[[], None]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Wall times of ``fn`` and ``ref`` in ``rounds`` pairs after one warm-up of each, the
    order alternating (ref first in even rounds), so neither always runs on a warmer cache."""
    for f in (ref, fn):
        f()
        sync()
    a, b = np.empty(rounds), np.empty(rounds)
    for r in range(rounds):
        for which in ((1, 0) if r % 2 == 0 else (0, 1)):
            start = time.perf_counter()
            (fn if which == 0 else ref)()
            sync()
            (a if which == 0 else b)[r] = time.perf_counter() - start
    return a, b


def timed_runs(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Wall times of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    return statistics.median(timed_runs(fn, repeats, sync))


@contextlib.contextmanager
def _threads(engine: str, threads: int) -> Iterator[None]:
    """torch's intra-op threads pinned to ``threads`` for a torch-cpu timing (an ONNX Runtime
    session was created with its own count; a GPU's kernels do not use them)."""
    if engine != "torch-cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def efficiency_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"seed": "int64", "level": "float64", "nonzero_params": "int64", "bytes": "int64",
                         "threads": "int64", "latency_ms_b1": "float64", "latency_ratio": "float64",
                         "latency_ratio_lo": "float64", "latency_ratio_hi": "float64", "images_per_s_b64": "float64"})
