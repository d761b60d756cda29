"""What each compression method costs the prune stage, and what it buys (issue 10).

Part 1, cost: the seconds (wall and this process's CPU time: on a shared machine the wall
time mostly measures the other jobs) each method adds to ``prune@<seed>``: ``prune_and_predict`` (the
prune stage's code path) with that method alone at the study's 20 levels on the default
model and test-set size, with its efficiency rows, once as the first seed (latency and
throughput timed) and once as any other seed (sizes only). The methods are alternated and
the whole round repeated; medians. Every call also measures the dense row (in each method's
figure; the stage measures it once per seed).

Part 2, side by side: dense vs each method at its operating point (``--summary``: the
``operating_points`` of a run's ``summary.json``, the largest level safe for every class, or
the method's lowest level when none is safe) or at ``--level`` (int8/fp16/bf16 at their one
level, 0.0), from the efficiency rows of the timed runs (medians over the repeats): latency
at batch 1, images/s at batch 64, bytes of the deployable file, non-zero parameters.

Without ``--model`` the weights are a seeded random initialisation of the default
architecture (the cost does not depend on training; sizes of unstructured and int8 files
do a little); ``--model data/models/synthetic/seed-0/model.pt`` uses a trained one.

    .venv/bin/python benchmarks/bench_compression.py                  # l1 random channel int8, 2 repeats
    .venv/bin/python benchmarks/bench_compression.py --model data/models/synthetic/seed-0/model.pt \
        --summary metrics/synthetic/summary.json                      # the default run's operating points

Writes ``benchmarks/results/bench_compression.{txt,json}`` and every timed efficiency row to
``benchmarks/results/bench_compression_efficiency.csv``.
    .venv/bin/python benchmarks/bench_compression.py --methods l1 random l1_layer channel int8 fp16 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import RESULTS, STUDY_LEVELS, median, print_table, record

from cxrprune.compression.efficiency import efficiency_table
from cxrprune.compression.methods.base import Context
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.config import PruneConfig, TrainConfig
from cxrprune.training.modelfile import load_checkpoint
from cxrprune.training.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["l1", "random", "channel", "int8"])
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--image-size", type=int, default=32, help="the default data.image_size")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--test-images", type=int, default=900, help="the default synthetic test split: ~900")
    ap.add_argument("--val-images", type=int, default=675)
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--model", default="", help="a model.pt to use instead of random weights")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--level", type=float, default=0.5, help="the level of part 2 without --summary")
    ap.add_argument("--summary", default="", help="a summary.json: part 2 at each method's operating point")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the predictions (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with record("bench_compression", args) as figures:
        run(args, figures)


def run(args, figures: dict) -> None:
    print(f"args: {vars(args)}")

    torch.manual_seed(0)
    if args.model:
        model, _ = load_checkpoint(args.model)
    else:
        model = build_model(args.arch, args.classes).eval()
    rng = np.random.default_rng(0)
    s = args.image_size
    images = torch.from_numpy(rng.integers(0, 256, (args.test_images, s, s), dtype=np.uint8))
    splits = {"val": (rng.integers(0, 256, (args.val_images, s, s), dtype=np.uint8),
                      (rng.random((args.val_images, args.classes)) < 0.1).astype(np.float32)),
              "train": (rng.integers(0, 256, (args.train_images, s, s), dtype=np.uint8),
                        (rng.random((args.train_images, args.classes)) < 0.1).astype(np.float32))}
    cfg = PruneConfig(methods=["l1", *[m for m in args.methods if m != "l1"]])
    ctx = Context(0, cfg, TrainConfig(), torch.device("cpu"), s, lambda split: splits[split])

    seconds: dict[tuple[str, bool], list[float]] = {}
    cpu_seconds: dict[tuple[str, bool], list[float]] = {}  # this process's CPU time: fairer on a shared machine
    rows: list[dict] = []
    for rep in range(args.repeats):
        order = args.methods[rep % len(args.methods):] + args.methods[:rep % len(args.methods)]  # alternate
        for timed in (True, False):
            for method in order:
                eff: list[dict] = []
                start, cpu = time.perf_counter(), time.process_time()
                prune_and_predict(model, images, [method], STUDY_LEVELS, 0, cfg.batch_size, "cpu", context=ctx,
                                  efficiency=eff, timed=timed)
                seconds.setdefault((method, timed), []).append(time.perf_counter() - start)
                cpu_seconds.setdefault((method, timed), []).append(time.process_time() - cpu)
                if timed:
                    rows += [{**r, "repeat": rep} for r in eff]
                wall, used = seconds[(method, timed)][-1], cpu_seconds[(method, timed)][-1]
                print(f"  repeat {rep} {method:>11} {'timed' if timed else 'sizes'}: {wall:.1f} s wall, "
                      f"{used:.1f} s CPU (CPU share {used / wall / torch.get_num_threads():.0%} of "
                      f"{torch.get_num_threads()} threads), load {os.getloadavg()[0]:.1f}", flush=True)

    print_table(["method", "first seed (timed) s wall", "CPU s", "other seeds s wall", "CPU s", "levels"],
                [[m, median(seconds[(m, True)]), median(cpu_seconds[(m, True)]), median(seconds[(m, False)]),
                  median(cpu_seconds[(m, False)]),
                  len(PruneConfig().levels) if m not in ("int8", "fp16", "bf16") else 1] for m in args.methods],
                title=f"Part 1: seconds of prune_and_predict per method (medians of {args.repeats}), "
                      f"{args.test_images} test images, {args.arch} at {s} px")
    table = efficiency_table([{k: v for k, v in r.items() if k != "repeat"} for r in rows])
    numbers = ["latency_ms_b1", "images_per_s_b64", "bytes", "nonzero_params"]
    med = table.groupby(["method", "level"], sort=False)[numbers].median().reset_index().merge(
        table[["method", "level", "engine", "threads"]].drop_duplicates(["method", "level"]), on=["method", "level"])
    raw = RESULTS / "bench_compression_efficiency.csv"
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(raw, index=False)
    print(f"\nevery efficiency row of the timed runs: benchmarks/results/{raw.name}")
    at = {m: args.level for m in args.methods}
    where = f"level {args.level:g}"
    if args.summary:
        points = json.loads(Path(args.summary).read_text())["operating_points"]
        at = {m: p["measured_at"] for m, p in points.items() if m in args.methods and p.get("measured_at") is not None}
        where = f"its operating point in {args.summary} ({', '.join(f'{m} {k:g}' for m, k in at.items())})"
    keep = (med["method"] == "dense") | med["method"].isin(["int8", "fp16", "bf16"])
    for m, k in at.items():
        keep |= (med["method"] == m) & np.isclose(med["level"], k)
    pick = med[keep].drop_duplicates(["method", "level"])
    dense = pick[pick["method"] == "dense"].iloc[0]
    print_table(["method", "level", "engine", "threads", "latency ms (b1)", "images/s (b64)", "MB", "bytes vs dense",
                 "non-zero params"],
                [[r.method, r.level, r.engine, r.threads, r.latency_ms_b1, r.images_per_s_b64, r.bytes / 1e6,
                  r.bytes / dense.bytes, int(r.nonzero_params)] for r in pick.itertuples()],
                title=f"Part 2: dense vs each method at {where} (medians of {args.repeats} timed runs)")
    figures["cost_s"] = {m: {"timed_wall": median(seconds[(m, True)]), "timed_cpu": median(cpu_seconds[(m, True)]),
                             "sizes_wall": median(seconds[(m, False)]), "sizes_cpu": median(cpu_seconds[(m, False)])}
                         for m in args.methods}
    figures["side_by_side"] = [{"method": r.method, "level": float(r.level), "engine": r.engine,
                                "latency_ms_b1": float(r.latency_ms_b1), "images_per_s_b64": float(r.images_per_s_b64),
                                "bytes": int(r.bytes), "bytes_vs_dense": float(r.bytes / dense.bytes),
                                "nonzero_params": int(r.nonzero_params)} for r in pick.itertuples()]
    figures["part2_at"] = where


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
