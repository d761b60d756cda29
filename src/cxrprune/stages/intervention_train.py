"""DVC stage ``intervention-train@<arm>-<seed>`` (studies/frequency-intervention/dvc.yaml):
train one seed with the arm's hidden positives masked out of the loss
(:mod:`cxrprune.intervention.arms`), with the main study's settings, then predict the
untouched test set with its L1-pruned versions at every ``prune.levels``. Writes
``predictions.parquet``, ``history.csv`` and ``train_set.json`` (the rare classes and the
positives the loss saw), then one MLflow run tagged with the arm and seed."""

from __future__ import annotations

import argparse
import numpy as np

from cxrprune.compression import predictions, retrain
from cxrprune.core.atomic import write_csv, write_json
from cxrprune.core.config import Params, to_dict
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.intervention import arms, study
from cxrprune.core.stage import Stage
from cxrprune.stats.metrics import average_precision
from cxrprune.tracking import store


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arm", required=True, help="which arm of the frequency intervention: rare_a, rare_b or control")


STAGE = Stage(name="intervention-train",
              help="frequency intervention: train one seed of one arm (hidden positives masked out of the loss), "
                   "prune, predict the test set",
              arguments=_arguments,
              fan_out="intervention.seeds")


def run(params: Params, arm: str, seed: int) -> None:
    cfg, out = params.intervention, params.layout
    classes = load_meta(out.prepared)["classes"]
    half = arms.halves(classes, cfg.assign_seed)
    rare = arms.rare_classes(arm, half)
    train = load_split(out.prepared, "train", verify="full")
    weights = arms.loss_weights(train[0], classes, rare, cfg.keep, cfg.assign_seed)  # checks before any work
    val = load_split(out.prepared, "val", verify="full")
    test_labels, test_images = load_split(out.prepared, "test", verify="full")
    result, results = retrain.train_prune_predict(params, study.train_config(params), seed, train, val, classes,
                                                  test_images, params.prune.levels, study.METHOD,
                                                  sample_weights=weights)
    predictions.write_predictions(out.intervention_predictions(arm, seed), results,
                                  test_labels["image_id"].astype(str).tolist(), classes)
    write_csv(out.intervention_history(arm, seed), result.history)
    seen = arms.seen_positives(train[0], classes, weights)
    record = {"arm": arm, "seed": seed, "rare_classes": rare, "hidden_positives": int((weights == 0).sum()),
              "seen_positives": {c: int(v) for c, v in seen.items()}, "best_epoch": result.best_epoch}
    write_json(out.intervention_train_set(arm, seed), record)
    dense = next(r for r in results if r.sparsity == 0.0)
    map_dense = float(np.nanmean(average_precision(test_labels[classes].to_numpy(), dense.probs)))
    store.log_tagged_run(params, "intervention-train", f"intervention-{arm}-seed-{seed}",
                         {"hidden_positives": record["hidden_positives"], "map_dense": map_dense,
                          "best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch},
                         {"seed": seed, **store.flatten("intervention", to_dict(params)["intervention"]),
                          **store.flatten("train", to_dict(study.train_config(params)))},
                         {"arm": arm, "seed": seed, "study": "frequency-intervention"})
    print(f"intervention-train {arm} seed {seed}: {len(rare)} classes rare, {record['hidden_positives']} training "
          f"positives hidden from the loss, test dense mAP {map_dense:.3f}")
