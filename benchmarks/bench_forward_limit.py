"""Ours vs the pure forward limit only: ``bench_prune_predict.py --baseline-levels 0``.

The limit is 20 dense forward passes of the same model with the same settings as ours
(channels-last, inference_mode, the same CPU chunks and heap reuse) over the same cached
inputs, already converted and normalised in memory; ours is the prune stage's
``prune_and_predict``. Both run in one process, interleaved level by level (see
bench_prune_predict.py); ``ours / limit`` is what pruning, input conversion and
bookkeeping add (target <= 1.10). Every option of bench_prune_predict.py applies, e.g.
``--images 64`` or ``--autocast bf16``.
"""

from __future__ import annotations

import sys

import bench_prune_predict

if __name__ == "__main__":
    if not any(a.startswith("--baseline-levels") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--baseline-levels", "0"]
    bench_prune_predict.main()
