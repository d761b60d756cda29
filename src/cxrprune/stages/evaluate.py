"""Stage ``evaluate``: per-class metrics of every seed, mAP vs sparsity, the paired test.

Reads ``data/prepared/<name>/{labels_test.parquet,meta.json}`` and every seed's prediction
table (checked whole against the contract, :mod:`cxrprune.compression.predictions`); writes
(atomically) ``metrics/<name>/{per_class.csv,map_by_seed.csv,evaluate.json}`` (the paired
test of every method against the dense model under ``methods``) and
``plots/<name>/map_vs_sparsity.csv``. The logic lives in :mod:`cxrprune.analysis.evaluate`.
With ``bootstrap.resamples > 0`` it also computes every block's AP for every resample of the
test patients and seeds (:mod:`cxrprune.analysis.uncertainty`), adds the mAP intervals to the curve table
and ``evaluate.json`` and writes the resamples for analyze (``data/bootstrap/<name>/``).
"""

from __future__ import annotations

import pandas as pd

from cxrprune.analysis import evaluate, uncertainty
from cxrprune.compression import predictions
from cxrprune.compression.methods import method_levels
from cxrprune.core.atomic import write_csv, write_json
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.config import Params
from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.core.stage import Stage


STAGE = Stage(name="evaluate",
              help="per-class AP/AUROC/F1, mAP vs sparsity, paired test")


def run(params: Params) -> None:
    cfg, out = params.evaluate, params.layout
    labels, classes = evaluate.load_test_labels(out.prepared)
    test_ids = labels["image_id"].astype(str).tolist()
    boot = params.bootstrap
    collector = (uncertainty.Collector(labels, classes, boot.resamples, boot.seed, boot.level)
                 if boot.resamples else None)
    tables = []
    # The bootstrap's per-resample arrays reuse heap pages instead of page-faulting fresh mmaps
    # (`perf stat` on the default: a third of the stage's wall time was system time).
    with cpu_heap_reuse():
        for seed in params.seeds:
            table = predictions.read_predictions(params, seed, test_ids, classes)
            tables.append(evaluate.per_class_metrics(table, labels, classes, seed, cfg.f1_threshold,
                                                     source=str(out.predictions_file(seed))))
            if collector is not None:
                collector.add(seed, table)
        resamples = collector.result() if collector is not None else None
    per_class = pd.concat(tables, ignore_index=True)
    maps = evaluate.map_table(per_class)
    # Every method against the dense model (l1 at 0); l1's result keeps evaluate.json's top-level keys.
    by_method = evaluate.paired_tests_by_method(
        maps, {m: method_levels(m, params.prune.levels) for m in params.prune.methods},
        cfg.test, cfg.correction, cfg.alpha)
    result = by_method[DENSE_REFERENCE.method]
    curve, summary = evaluate.map_curve(maps), evaluate.summarize(maps, result, cfg, by_method)
    if resamples is not None:
        intervals = uncertainty.map_intervals(resamples)
        curve = uncertainty.with_map_intervals(curve, intervals)
        summary.update({**uncertainty.map_ci_keys(intervals, evaluate.REPORTED_LEVELS),
                        "bootstrap": uncertainty.describe(resamples)})

    uncertainty.save(out.ap_resamples, resamples)
    write_csv(out.per_class, per_class)
    write_csv(out.map_by_seed, maps)
    write_csv(out.map_curve, curve)
    write_json(out.evaluation, summary)
