"""Stage ``evaluate``: per-class metrics of every seed, mAP vs sparsity, the paired test.

Reads ``data/prepared/<name>/{labels_test.parquet,meta.json}`` and
``data/predictions/<name>/seed-<s>.parquet`` for every seed; writes (atomically)
``metrics/<name>/{per_class.csv,map_by_seed.csv,evaluate.json}`` and
``plots/<name>/map_vs_sparsity.csv``. The logic lives in :mod:`cxrprune.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import evaluate
from ..atomic import write_csv, write_json
from ..config import Params
from .prune import check_predictions


def run(params: Params) -> None:
    name = params.data.name
    cfg = params.evaluate
    labels, classes = evaluate.load_test_labels(params.data.prepared_dir)
    per_class = pd.concat([_seed_metrics(params, seed, labels, classes) for seed in params.seeds],
                          ignore_index=True)
    maps = evaluate.map_table(per_class)
    result = evaluate.paired_test(maps, "l1", cfg.test, cfg.correction, cfg.alpha)

    metrics_dir, plots_dir = Path("metrics") / name, Path("plots") / name
    write_csv(metrics_dir / "per_class.csv", per_class)
    write_csv(metrics_dir / "map_by_seed.csv", maps)
    write_csv(plots_dir / "map_vs_sparsity.csv", evaluate.map_curve(maps))
    write_json(metrics_dir / "evaluate.json", evaluate.summarize(maps, result, cfg))


def _seed_metrics(params: Params, seed: int, labels: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    path = Path("data/predictions") / params.data.name / f"seed-{seed}.parquet"
    predictions = evaluate.load_predictions(path)
    evaluate.check_blocks(predictions, params.prune.methods, params.prune.levels, source=str(path))
    # The whole contract (row count, dtypes, every block in test order, probabilities in [0, 1]).
    check_predictions(predictions, str(path), labels["image_id"].tolist(), classes, params.prune.methods,
                      params.prune.levels, fix=f"rerun `dvc repro prune@{seed} --force`")
    return evaluate.per_class_metrics(predictions, labels, classes, seed, params.evaluate.f1_threshold,
                                      source=str(path))
