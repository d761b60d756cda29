"""Cost of the bootstrap intervals at the default size, against the evaluate stage's own
per-class metrics on the same blocks.

The default run has 5 seeds x 2 methods x 20 levels = 200 blocks of 900 test images x 20
classes. This script builds random blocks of that shape (long-tailed labels, float32
probabilities) and times, interleaved and repeated:

- metrics: :func:`cxrprune.stats.metrics.metrics_for_blocks` (AP, AUROC, F1 of every
  block: what evaluate computes without intervals);
- bootstrap: :class:`cxrprune.analysis.uncertainty.Collector` (AP of every class of every
  block for every one of ``--resamples`` resamples) plus :func:`map_intervals`.

    python benchmarks/bench_bootstrap.py --seeds 5 --images 900 --resamples 1000 --repeats 3

Writes ``benchmarks/results/bench_bootstrap.{txt,json}``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from common import STUDY_LEVELS, record  # sets up sys.path for src/

from cxrprune.analysis import uncertainty
from cxrprune.stats.metrics import metrics_for_blocks


def tables(seeds: int, n: int, c: int, rng: np.random.Generator):
    classes = [f"c{j}" for j in range(c)]
    prevalence = np.geomspace(0.4, 0.01, c)
    y = (rng.random((n, c)) < prevalence).astype(np.int8)
    labels = pd.DataFrame(y, columns=classes).assign(image_id=[f"{i:06d}" for i in range(n)])
    out = []
    for _ in range(seeds):
        blocks = []
        for method in ("l1", "random"):
            for k in STUDY_LEVELS:
                p = np.clip(0.3 * y + rng.random((n, c)) * (1 - k / 2), 0, 1).astype(np.float32)
                b = pd.DataFrame(p, columns=classes)
                b.insert(0, "sparsity", k)
                b.insert(0, "method", method)
                b.insert(0, "image_id", labels["image_id"])
                blocks.append(b)
        out.append(pd.concat(blocks, ignore_index=True))
    return labels, classes, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--images", type=int, default=900)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with record("bench_bootstrap", args) as fig:
        run(args, fig)


def run(args, fig: dict) -> None:
    labels, classes, preds = tables(args.seeds, args.images, args.classes, np.random.default_rng(0))
    y = labels[classes].to_numpy()

    def metrics() -> None:
        for t in preds:
            scores = t[classes].to_numpy()
            blocks = [scores[i * args.images:(i + 1) * args.images] for i in range(len(t) // args.images)]
            metrics_for_blocks(y, blocks)

    def boot() -> None:
        col = uncertainty.Collector(labels, classes, args.resamples, 0, 0.95)
        for s, t in enumerate(preds):
            col.add(s, t)
        uncertainty.map_intervals(col.result())

    times: dict[str, list[float]] = {"metrics": [], "bootstrap": []}
    for _ in range(args.repeats):
        for name, fn in (("metrics", metrics), ("bootstrap", boot)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    print(f"{args.seeds} seeds x 40 blocks of {args.images} images x {args.classes} classes, "
          f"{args.resamples} resamples, median of {args.repeats}")
    print("| path | wall s | CPU s |")
    print("| --- | --- | --- |")
    for name, rows in times.items():
        wall, cpu = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
        fig[name] = {"wall_s": wall, "cpu_s": cpu, "runs": [list(r) for r in rows]}


if __name__ == "__main__":
    main()
