"""What the study's stages share: the checks run before any work, reading a prediction
table of the study, and its MLflow runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrprune.compression import predictions
from cxrprune.core import upstream
from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError
from cxrprune.pietreatment import folds as oof

STUDY_FILE = "studies/pie-treatment/dvc.yaml"
METHOD = "l1"


def check_seed(params: Params, seed: int) -> None:
    if seed not in params.pie_treatment.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml pie_treatment.seeds {params.pie_treatment.seeds}")


def folds_of(params: Params, train_labels: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The checked fold of every training image (the bad-input checks, before any work)."""
    k = len(params.pie_treatment.folds)
    oof.check_fraction(params.analyze.pie_fraction, len(train_labels))
    fold = oof.assign_folds(train_labels, classes, k, params.pie_treatment.fold_seed)
    oof.check_folds(train_labels, classes, fold, k)
    return fold


def read_table(path: Path, image_ids: Sequence[str], classes: list[str], levels: Sequence[float],
               stage: str) -> list[pd.DataFrame]:
    """A study prediction table, checked against the prediction-table contract for these
    images; returns its blocks in ``levels`` order."""
    table = upstream.read_parquet(path, stage)
    fix = f"rerun `dvc repro {STUDY_FILE}:{stage} --force`"
    predictions.check_predictions(table, str(path), image_ids, classes, [METHOD], levels, fix=fix)
    s = table["sparsity"].to_numpy()
    return [table.loc[np.isclose(s, k, rtol=0, atol=predictions.LEVEL_TOLERANCE)].reset_index(drop=True)
            for k in levels]


def log_run(params: Params, stage: str, run_name: str, metrics: dict, run_params: dict, tags: dict,
            artifacts=()) -> None:
    """One MLflow run tagged with ``tags`` (treatment, seed); a tracking failure is a warning:
    the DVC outputs are written first and rerunning the stage logs it again."""
    from cxrprune.tracking import store

    try:
        from mlflow.tracking import MlflowClient

        run_id = store.log_summary_run(params, stage, run_name, metrics, run_params, artifacts=artifacts)
        client = MlflowClient()
        for key, value in tags.items():
            client.set_tag(run_id, key, str(value))
    except Exception as exc:  # noqa: BLE001 - MlflowException, requests and sqlalchemy errors
        print(f"cxrprune: warning: MLflow logging of {run_name} failed ({type(exc).__name__}); the outputs are "
              f"kept; rerun the stage with --force to log it", file=sys.stderr)
