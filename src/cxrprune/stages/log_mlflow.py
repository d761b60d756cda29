"""``cxrprune log-mlflow [--seed S]``: write the MLflow records a seed's DVC outputs lack.

Not a dvc.yaml stage. The DVC outputs are the record of a study; MLflow is a view of them
that can be rebuilt: when the tracking store was unreachable while a seed trained or was
pruned (the stages then warn and keep their outputs), or the store was lost or replaced,
this command re-logs, from the outputs, only what the store is missing:

- the seed's training run (found by ``run.json``'s run id, else by the checkpoint's md5
  tag; else created, tagged ``relogged=true``): params, one set of metrics per row of
  ``history.csv``, the best-epoch metrics, the checkpoint's path and md5, status FINISHED;
- one child run per (method, level) of ``data/predictions/<name>/seed-<s>.parquet`` that
  the store lacks for this table (children carry the table's md5): mAP, mean AUROC and
  per-class AP from the table and the prepared test labels (the measured sparsity needs the
  pruned model and is not re-logged).

Running it again writes nothing new. Without ``--seed`` every seed of params.yaml is done.
"""

from __future__ import annotations

from cxrprune.compression import predictions
from cxrprune.core.config import Params
from cxrprune.core.errors import DataError
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.core.stage import Stage
from cxrprune.stats.metrics import child_metrics
from cxrprune.tracking import runs, store


STAGE = Stage(name="log-mlflow",
              help="write the MLflow records a seed's train/prune outputs lack (after the tracking store was "
                   "unreachable or lost)",
              fan_out="seeds",
              seed_required=False)


def run(params: Params, seed: int | None = None) -> None:
    seeds = [seed] if seed is not None else list(params.seeds)
    prepared = params.data.prepared_dir
    meta = load_meta(prepared)
    if "imported" in meta:
        raise DataError(f"{prepared}: holds imported predictions, which have no training runs to re-log")
    classes = list(meta["classes"])
    labels, _ = load_split(prepared, "test")
    y_true = labels[classes].to_numpy()
    test_ids = labels["image_id"].astype(str).tolist()
    experiment_id = store.start(params.mlflow)
    for s in seeds:
        if seed is None and not params.layout.model_file(s).is_file():
            print(f"seed {s}: not trained yet ({params.layout.model_dir(s)} has no model.pt), skipped")
            continue
        run_id, written = runs.relog_training(params, s, experiment_id)
        path = params.layout.predictions_file(s)
        n_children = 0
        if path.is_file():
            table = predictions.read_predictions(params, s, test_ids, classes)
            results = predictions.results_from_table(table, classes)
            n_children = runs.log_children(params, s, experiment_id, results, child_metrics(results, y_true, classes),
                                            predictions_md5=store.file_md5(path), parent=run_id,
                                            extra_tags={"relogged": "true"})
        if n_children:
            written.append(f"{n_children} child run(s)")
        pruned = "" if path.is_file() else f" ({path} not there yet: no children)"
        print(f"seed {s}: training run {run_id}: {', '.join(written) if written else 'nothing missing'}{pruned}")
