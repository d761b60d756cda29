"""DVC stage ``pie-retrain@<treatment>-<seed>`` (studies/pie-treatment/dvc.yaml): retrain one
seed under one treatment of the training-set PIEs (baseline, remove, upweight,
remove_random; :mod:`cxrprune.pietreatment.treatments`), with the main study's settings, then
predict the untouched test set with its L1-pruned versions at every ``prune.levels``.
Writes ``predictions.parquet``, ``history.csv`` and ``train_set.json`` (the set, counted),
then one MLflow run tagged with the treatment and seed."""

from __future__ import annotations

import argparse
import numpy as np

from cxrprune.compression import predictions, retrain
from cxrprune.core import upstream
from cxrprune.core.atomic import write_csv, write_json
from cxrprune.core.config import Params, to_dict
from cxrprune.core.layout import producer
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.pietreatment import model, study
from cxrprune.pietreatment.treatments import training_set
from cxrprune.core.stage import Stage
from cxrprune.stats.metrics import average_precision
from cxrprune.tracking import store


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--treatment", required=True, help="which of params.yaml's pie_treatment.treatments")


STAGE = Stage(name="pie-retrain",
              help="PIE study: retrain one seed under one treatment, prune, predict the test set",
              arguments=_arguments,
              fan_out="pie_treatment.seeds")


def run(params: Params, treatment: str, seed: int) -> None:
    cfg, out = params.pie_treatment, params.layout
    if treatment not in cfg.treatments:
        raise ConfigError(f"--treatment {treatment} is not in params.yaml pie_treatment.treatments {cfg.treatments}")
    classes = load_meta(out.prepared)["classes"]
    train = load_split(out.prepared, "train", verify="full")
    val = load_split(out.prepared, "val", verify="full")
    test_labels, test_images = load_split(out.prepared, "test", verify="full")
    scores = upstream.read_csv(out.pie_train_scores, dtype={"image_id": str})
    if scores["image_id"].tolist() != train[0]["image_id"].astype(str).tolist():
        raise DataError(f"{out.pie_train_scores}: does not list the training images in order; "
                        f"rerun `dvc repro {producer('pie_train_scores')}`")
    is_pie = scores["is_pie"].to_numpy(dtype=bool)
    chosen = training_set(treatment, is_pie, train[0][classes].to_numpy(), cfg.weight, seed)
    result, results = retrain.train_prune_predict(params, model.train_config(params), seed, train, val, classes,
                                                test_images, params.prune.levels, study.METHOD,
                                                rows=chosen.rows, sample_weights=chosen.weights)
    predictions.write_predictions(out.pie_treatment_predictions(treatment, seed), results,
                                  test_labels["image_id"].astype(str).tolist(), classes)
    write_csv(out.pie_treatment_history(treatment, seed), result.history)
    counts = {"treatment": treatment, "seed": seed, **chosen.counts(is_pie), "best_epoch": result.best_epoch}
    write_json(out.pie_treatment_train_set(treatment, seed), counts)
    dense = next(r for r in results if r.sparsity == 0.0)
    map_dense = float(np.nanmean(average_precision(test_labels[classes].to_numpy(), dense.probs)))
    store.log_tagged_run(params, "pie-retrain", f"pie-{treatment}-seed-{seed}",
                  {**{k: v for k, v in counts.items() if k not in ("treatment", "seed")}, "map_dense": map_dense,
                   "best_val_loss": result.best_val_loss},
                  {"seed": seed, **store.flatten("pie_treatment", to_dict(params)["pie_treatment"]),
                   **store.flatten("train", to_dict(model.train_config(params)))},
                  {"treatment": treatment, "seed": seed, "study": "pie-treatment"})
    print(f"pie-retrain {treatment} seed {seed}: {counts['n_train']} training images "
          f"({counts['n_dropped']} dropped, {counts['n_upweighted']} upweighted), test dense mAP {map_dense:.3f}")
