"""Wall time of N seeds: ``cxrprune repro --ray`` against a plain sequential ``dvc repro``.

Two twin workspaces of the tiny test study (tests/test_pipeline.py) with ``--seeds`` seeds;
``generate`` and ``prepare`` are run first in both and not timed (they are the same work
either way). Then:

- sequential: ``dvc repro <every train@s and prune@s>`` (the per-seed phase), then
  ``dvc repro`` (evaluate, analyze, reader-*): together one plain ``dvc repro``;
- Ray: ``cxrprune repro --ray`` on a local runtime with all cores; its phases (Ray start,
  seeds, the rest) come from ``.dvc/tmp/ray-logs/summary.json``.

Both use ``train.threads: 0``: the sequential stages get torch's default (every core), each
Ray task the ``OMP_NUM_THREADS`` of its CPU share. Printed: both wall times and their ratio,
the per-seed times, and the expected time on k GPUs from the measured per-seed times::

    T(k) = T_start + sum over the k-way schedule of per-seed times + T_rest
         ~ T_start + ceil(N / k) * t_seed + T_rest      (equal per-seed times t_seed)
    bounds: max(max_s t_s, sum_s t_s / k) <= seed phase <= sum_s t_s / k + (1 - 1/k) max_s t_s
    speed-up S(k) = (N * t_seed + T_rest) / T(k)

    python benchmarks/bench_ray.py --seeds 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_pipeline import make_workspace  # noqa: E402  (the tiny study the tests use)

BIN = Path(sys.executable).parent


def bench_env() -> dict:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("MLFLOW_", "DVC_")) and k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["DVC_NO_ANALYTICS"] = "1"
    e["RAY_USAGE_STATS_ENABLED"] = "0"
    return e


def timed_run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=bench_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def workspace(dest: Path, seeds: list[int]) -> Path:
    dest.mkdir(parents=True)
    ws = make_workspace(dest)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["seeds"] = seeds
    params["train"]["threads"] = 0
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    timed_run([str(BIN / "dvc"), "repro", "prepare"], ws)  # untimed set-up, same in both
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2, help="number of seeds (default 2)")
    ap.add_argument("--gpus", default="1,2,4,8", help="k values for the projection (default 1,2,4,8)")
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.seeds} seeds of the tiny study")

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        seq = workspace(Path(tmp) / "sequential", seeds)
        par = workspace(Path(tmp) / "ray", seeds)

        per_seed = {}
        for s in seeds:  # one dvc repro per seed gives the per-seed times; the sum is the seed phase
            per_seed[s] = timed_run([str(BIN / "dvc"), "repro", f"train@{s}", f"prune@{s}"], seq)
        seq_rest = timed_run([str(BIN / "dvc"), "repro"], seq)
        seq_seeds = sum(per_seed.values())
        seq_total = seq_seeds + seq_rest

        ray_total = timed_run([str(BIN / "cxrprune"), "repro", "--ray", "--progress", "none"], par)
        summary = json.loads((par / ".dvc/tmp/ray-logs/summary.json").read_text())
        phases = summary["phases"]
        stages = summary["stages"]
        ray_stage = {a: s["end"] - s["start"] for a, s in stages.items() if s["state"] == "done"}
        ray_seed = {s: ray_stage.get(f"train@{s}", 0) + ray_stage.get(f"prune@{s}", 0) for s in seeds}

    print(f"\nsequential dvc repro   : seeds {seq_seeds:6.1f} s + rest {seq_rest:5.1f} s = {seq_total:6.1f} s")
    print(f"cxrprune repro --ray   : ray start {phases.get('ray_init', 0):4.1f} s + seeds {phases.get('seeds', 0):6.1f} s"
          f" + rest {phases.get('rest', 0):5.1f} s (+ planning/commits) = {ray_total:6.1f} s")
    print(f"ratio sequential / ray : {seq_total / ray_total:.2f}x overall, "
          f"{seq_seeds / max(phases.get('seeds', 1e-9), 1e-9):.2f}x on the per-seed phase "
          f"(task: {summary['task_resources']['num_cpus']} CPU, {summary['task_resources']['threads']} thread(s))")
    print("\nper-seed wall time (train + prune):")
    for s in seeds:
        print(f"  seed {s}: sequential {per_seed[s]:5.1f} s (all cores, incl. dvc start-up)   "
              f"ray task {ray_seed[s]:5.1f} s (1 share, run alongside the others)")

    t_seed = seq_seeds / len(seeds)
    t_max = max(per_seed.values())
    t_start, t_rest = phases.get("ray_init", 0.0), seq_rest
    print(f"\nexpected on k GPUs, one seed per GPU, from t_seed = {t_seed:.1f} s (this machine's sequential "
          f"per-seed time; put a GPU's time in for real numbers), T_start = {t_start:.1f} s, T_rest = {t_rest:.1f} s:")
    print("  T(k) = T_start + ceil(N/k) * t_seed + T_rest;   S(k) = (N * t_seed + T_rest) / T(k)")
    print("  seed phase bounded by max(max t_s, sum t_s / k) <= . <= sum t_s / k + (1 - 1/k) max t_s")
    for n in sorted({len(seeds), 30}):
        print(f"  N = {n}{' (the paper, per dataset)' if n == 30 else ''}:")
        for k in [int(x) for x in args.gpus.split(",")]:
            t_k = t_start + math.ceil(n / k) * t_seed + t_rest
            s_k = (n * t_seed + t_rest) / t_k
            lo, hi = max(t_max, n * t_seed / k), n * t_seed / k + (1 - 1 / k) * t_max
            print(f"    k = {k:2d}: T = {t_k:7.1f} s, speed-up {s_k:5.2f}x (seed phase {lo:.0f}-{hi:.0f} s)")


if __name__ == "__main__":
    main()
