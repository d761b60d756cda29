"""Stage ``evaluate``: per-class metrics of every seed, mAP vs sparsity, the paired test.

Reads ``data/prepared/<name>/{labels_test.parquet,meta.json}`` and every seed's prediction
table (checked whole against the contract, :mod:`cxrprune.compression.predictions`); writes
(atomically) ``metrics/<name>/{per_class.csv,map_by_seed.csv,evaluate.json}`` (the paired
test of every method against the dense model under ``methods``) and
``plots/<name>/map_vs_sparsity.csv``. The logic lives in :mod:`cxrprune.analysis.evaluate`.
"""

from __future__ import annotations

import pandas as pd

from cxrprune.analysis import evaluate
from cxrprune.compression import predictions
from cxrprune.compression.methods import method_levels
from cxrprune.core.atomic import write_csv, write_json
from cxrprune.core.config import Params


def run(params: Params) -> None:
    cfg, out = params.evaluate, params.layout
    labels, classes = evaluate.load_test_labels(out.prepared)
    test_ids = labels["image_id"].astype(str).tolist()
    per_class = pd.concat([
        evaluate.per_class_metrics(predictions.read_predictions(params, seed, test_ids, classes), labels, classes,
                                   seed, cfg.f1_threshold, source=str(out.predictions_file(seed)))
        for seed in params.seeds], ignore_index=True)
    maps = evaluate.map_table(per_class)
    # Every method against the dense model (l1 at 0); l1's result keeps evaluate.json's top-level keys.
    by_method = evaluate.paired_tests_by_method(
        maps, {m: method_levels(m, params.prune.levels) for m in params.prune.methods},
        cfg.test, cfg.correction, cfg.alpha)
    result = by_method["l1"]

    write_csv(out.per_class, per_class)
    write_csv(out.map_by_seed, maps)
    write_csv(out.map_curve, evaluate.map_curve(maps))
    write_json(out.evaluation, evaluate.summarize(maps, result, cfg, by_method))
