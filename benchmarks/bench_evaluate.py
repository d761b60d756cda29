"""Time cxrprune's per-class metrics against a loop over scikit-learn's average precision.

The evaluate stage scores every (seed, sparsity) block: the paper's 30 seeds x 20 levels
are 600 blocks of ~21,000 test images x 20 classes. This script builds random blocks of
that shape (long-tailed labels with the real NIH-CXR-LT val+test prevalences for 20
classes, float32 probabilities like the prediction files), then times

- ours: :func:`cxrprune.stats.metrics.metrics_for_blocks` -- AP *and* AUROC and F1 of every
  class, with 1 thread and with ``--workers`` threads;
- sklearn: ``average_precision_score`` called per class and block -- AP only;

Same process, interleaved: each of ``--repeats`` rounds runs the three once, in an order
that rotates every round; printed are the median times, the speed-up and the largest
absolute AP difference. The ratio is per block, so a smaller ``--blocks`` gives the same ratio
sooner::

    python benchmarks/bench_evaluate.py --blocks 600 --images 21000 --classes 20 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from common import record
from sklearn.metrics import average_precision_score

from cxrprune.core.classes import NIH_VALTEST_IMAGES, nih_valtest_cooccurrence
from cxrprune.stats.metrics import metrics_for_blocks


def prevalence(n_classes: int) -> np.ndarray:
    """Real NIH-CXR-LT val+test prevalences for 20 classes, else a geometric long tail."""
    if n_classes == 20:
        return nih_valtest_cooccurrence().diagonal() / NIH_VALTEST_IMAGES
    return np.geomspace(0.44, 0.0026, n_classes)


def make_data(blocks: int, images: int, classes: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    y = (rng.random((images, classes)) < prevalence(classes)).astype(np.int8)
    y[0], y[1] = 1, 0  # every class has both labels, so every AP and AUROC is defined
    logit_base = 2.0 * y - 2.5
    scores = []
    for _ in range(blocks):
        logits = logit_base + rng.normal(0.0, 1.5, y.shape)
        scores.append((1.0 / (1.0 + np.exp(-logits))).astype(np.float32))
    return y, scores


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds and last result of each function; each round runs all of them once, the
    order rotating every round, so machine load falls on all alike."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    results: dict[str, object] = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            results[name] = fns[name]()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, results


def sklearn_ap(y: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    return np.array([[average_precision_score(y[:, j], s[:, j]) for j in range(y.shape[1])] for s in blocks])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=600)
    parser.add_argument("--images", type=int, default=21000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    with record("bench_evaluate", args) as fig:
        _measure(args, fig)


def _measure(args, fig: dict) -> None:
    print(f"blocks={args.blocks} images={args.images} classes={args.classes} repeats={args.repeats} "
          f"workers={args.workers} cpus={os.cpu_count()}")
    start = time.perf_counter()
    y, blocks = make_data(args.blocks, args.images, args.classes)
    print(f"generated data in {time.perf_counter() - start:.1f} s (not timed)")

    t, res = interleaved({"ours": lambda: metrics_for_blocks(y, blocks, threshold=0.5, workers=1),
                          "threads": lambda: metrics_for_blocks(y, blocks, threshold=0.5, workers=args.workers),
                          "sklearn": lambda: sklearn_ap(y, blocks)}, args.repeats)
    t_ours, t_threads, t_sk = t["ours"], t["threads"], t["sklearn"]
    ours, reference = res["ours"], res["sklearn"]
    max_diff = float(np.max(np.abs(np.array([m.ap for m in ours]) - reference)))

    per_block = 1000 / args.blocks
    print(f"sklearn average_precision_score loop (AP only): {t_sk:8.2f} s  ({t_sk * per_block:.2f} ms/block)")
    print(f"cxrprune metrics_for_blocks, 1 thread (AP+AUROC+F1): {t_ours:8.2f} s  "
          f"({t_ours * per_block:.2f} ms/block)  speed-up {t_sk / t_ours:.1f}x")
    print(f"cxrprune metrics_for_blocks, {args.workers} threads (AP+AUROC+F1): {t_threads:8.2f} s  "
          f"({t_threads * per_block:.2f} ms/block)  speed-up {t_sk / t_threads:.1f}x")
    print(f"max |AP ours - AP sklearn| = {max_diff:.3e}")
    fig.update(blocks=args.blocks, images=args.images, classes=args.classes, repeats=args.repeats,
               workers=args.workers, sklearn_s=t_sk, ours_1thread_s=t_ours, ours_threads_s=t_threads,
               speedup_1thread=t_sk / t_ours, speedup_threads=t_sk / t_threads, max_ap_diff=max_diff)


if __name__ == "__main__":
    main()
