"""DVC stage ``pie-fold@<fold>-<seed>`` (studies/pie-treatment/dvc.yaml): train one seed on
the training images outside fold ``fold`` and predict that fold's images, dense and L1-pruned
at ``analyze.pie_sparsity`` (the out-of-fold scores of the PIE treatment study)."""

from __future__ import annotations

import argparse

from cxrprune.compression import predictions, retrain
from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.pietreatment import folds as oof
from cxrprune.pietreatment import model, study
from cxrprune.core.stage import Stage


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fold", type=int, required=True, help="which of params.yaml's pie_treatment.folds is scored")


STAGE = Stage(name="pie-fold",
              help="PIE study: train one seed without one fold, score that fold's training images",
              arguments=_arguments,
              fan_out="pie_treatment.seeds")


def run(params: Params, fold: int, seed: int) -> None:
    if fold not in params.pie_treatment.folds:
        raise ConfigError(f"--fold {fold} is not in params.yaml pie_treatment.folds {params.pie_treatment.folds}")
    out = params.layout
    classes = load_meta(out.prepared)["classes"]
    train = load_split(out.prepared, "train", verify="full")
    val = load_split(out.prepared, "val", verify="full")
    folds = study.folds_of(params, train[0], classes)
    trained_on, scored = oof.fold_rows(folds, fold)
    levels = [0.0, params.analyze.pie_sparsity]
    result, results = retrain.train_prune_predict(params, model.train_config(params), seed, train, val, classes,
                                                train[1][scored], levels, study.METHOD, rows=trained_on)
    ids = train[0]["image_id"].astype(str).to_numpy()[scored].tolist()
    predictions.write_predictions(out.pie_fold_predictions(fold, seed), results, ids, classes)
    print(f"pie-fold {fold} seed {seed}: trained on {len(trained_on)} images (best epoch "
          f"{result.best_epoch}), scored {len(scored)} held-out training images")
