"""Wall time of N seeds: ``cxrprune repro --ray`` against one plain sequential ``dvc repro``.

Subprocesses (the two commands, as a user runs them), interleaved: ``--repeats`` rounds,
each on two fresh twin workspaces of the tiny test study (tests/test_pipeline.py) with
``--seeds`` seeds, ``generate`` and ``prepare`` run first in both and not timed (the same
work either way); then, in an order that flips every round:

- sequential: one ``dvc repro`` (every remaining stage: the seeds, evaluate, analyze,
  reader-*);
- Ray: ``cxrprune repro --ray`` on a local runtime; its phases (Ray start, seeds, the rest)
  and per-stage times come from ``.dvc/tmp/ray-logs/summary.json``.

Same threads per stage on both sides: ``train.threads`` is set in both workspaces to what
a Ray task gets here (an equal share of the cores: ``max(1, nproc // seeds)``), so the
sequential stages do not run with fewer threads than they could and the Ray side cannot
show a super-linear speed-up from thread counts alone. Printed: the wall times of every
round, their medians and ratio, the CPU share this process tree got, and the expected time
on k parallel workers from Ray's measured per-seed stage times::

    T(k) = T_start + ceil(N / k) * t_seed + T_rest;   S(k) = (N * t_seed + T_rest) / T(k)

    python benchmarks/bench_ray.py --seeds 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from common import record
from test_pipeline import make_workspace

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
    proc = subprocess.run(cmd, cwd=cwd, env=bench_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def workspace(dest: Path, seeds: list[int], threads: int) -> Path:
    dest.mkdir(parents=True)
    ws = make_workspace(dest)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["seeds"] = seeds
    params["train"]["threads"] = threads
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    timed_run([str(BIN / "dvc"), "repro", "prepare"], ws)  # untimed set-up, same in both
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2, help="number of seeds (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--gpus", default="1,2,4,8", help="k values for the projection (default 1,2,4,8)")
    args = ap.parse_args()
    with record("bench_ray", args) as fig:
        measure(args, fig)


def measure(args, fig: dict) -> None:
    seeds = list(range(args.seeds))
    threads = max(1, (os.cpu_count() or 1) // args.seeds)
    print(f"{args.seeds} seeds of the tiny study, train.threads = {threads} on both sides, {args.repeats} rounds")
    seq_t, ray_t, ray_phases, ray_seed = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        for r in range(args.repeats):
            seq = workspace(Path(tmp) / f"sequential{r}", seeds, threads)
            par = workspace(Path(tmp) / f"ray{r}", seeds, threads)
            for side in (("sequential", "ray") if r % 2 == 0 else ("ray", "sequential")):
                if side == "sequential":
                    seq_t.append(timed_run([str(BIN / "dvc"), "repro"], seq))
                else:
                    ray_t.append(timed_run([str(BIN / "cxrprune"), "repro", "--ray", "--progress", "none"], par))
                    summary = json.loads((par / ".dvc/tmp/ray-logs/summary.json").read_text())
                    ray_phases.append(summary["phases"])
                    st = {a: v["end"] - v["start"] for a, v in summary["stages"].items() if v["state"] == "done"}
                    ray_seed.append([st.get(f"train@{s}", 0) + st.get(f"prune@{s}", 0) for s in seeds])
                    task = summary["task_resources"]
            print(f"  round {r}: sequential dvc repro {seq_t[-1]:.1f} s, cxrprune repro --ray {ray_t[-1]:.1f} s "
                  f"(ray start {ray_phases[-1].get('ray_init', 0):.1f} s, seeds {ray_phases[-1].get('seeds', 0):.1f} s, "
                  f"rest {ray_phases[-1].get('rest', 0):.1f} s)", flush=True)
            shutil.rmtree(seq, ignore_errors=True)
            shutil.rmtree(par, ignore_errors=True)
    t_seq, t_ray = statistics.median(seq_t), statistics.median(ray_t)
    print(f"\nsequential dvc repro   : {t_seq:6.1f} s median of {seq_t}")
    print(f"cxrprune repro --ray   : {t_ray:6.1f} s median of {ray_t} "
          f"(task: {task['num_cpus']} CPU, {task['threads']} thread(s); stages: train.threads = {threads})")
    print(f"ratio sequential / ray : {t_seq / t_ray:.2f}x (ratio of medians; per round "
          + ", ".join(f"{a / b:.2f}x" for a, b in zip(seq_t, ray_t, strict=True)) + ")")
    t_seed = statistics.median([t for row in ray_seed for t in row])
    t_start = statistics.median([p.get("ray_init", 0.0) for p in ray_phases])
    t_rest = statistics.median([p.get("rest", 0.0) for p in ray_phases])
    print(f"\nexpected on k parallel workers, one seed each, from Ray's measured per-seed time (train + prune, "
          f"median) t_seed = {t_seed:.1f} s, T_start = {t_start:.1f} s, T_rest = {t_rest:.1f} s "
          f"(put a GPU's per-seed time in t_seed for GPU figures):")
    print("  T(k) = T_start + ceil(N/k) * t_seed + T_rest;   S(k) = (N * t_seed + T_rest) / T(k)")
    proj = {}
    for n in sorted({len(seeds), 30}):
        for k in [int(x) for x in args.gpus.split(",")]:
            t_k = t_start + math.ceil(n / k) * t_seed + t_rest
            s_k = (n * t_seed + t_rest) / t_k
            proj[f"N{n}_k{k}"] = {"seconds": t_k, "speedup": s_k}
            print(f"  N = {n:2d}, k = {k:2d}: T = {t_k:7.1f} s, speed-up {s_k:5.2f}x")
    fig.update(seeds=args.seeds, repeats=args.repeats, threads_per_stage=threads, task_resources=task,
               sequential_s=seq_t, ray_s=ray_t, sequential_median_s=t_seq, ray_median_s=t_ray,
               ratio=t_seq / t_ray, t_seed_s=t_seed, t_start_s=t_start, t_rest_s=t_rest, projection=proj)


if __name__ == "__main__":
    main()
