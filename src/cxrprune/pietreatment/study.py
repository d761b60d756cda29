"""What the study's stages share: the checks run before any work and reading a prediction
table of the study."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrprune.compression import predictions
from cxrprune.core.config import Params
from cxrprune.pietreatment import folds as oof

METHOD = "l1"


def folds_of(params: Params, train_labels: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The checked fold of every training image (the bad-input checks, before any work)."""
    k = len(params.pie_treatment.folds)
    oof.check_fraction(params.analyze.pie_fraction, len(train_labels))
    fold = oof.assign_folds(train_labels, classes, k, params.pie_treatment.fold_seed)
    oof.check_folds(train_labels, classes, fold, k)
    return fold


def read_table(path: Path, image_ids: Sequence[str], classes: list[str], levels: Sequence[float],
               stage: str) -> list[pd.DataFrame]:
    """A study prediction table of ``stage`` (its ``dvc repro`` target), checked; its blocks in
    ``levels`` order."""
    return predictions.read_level_blocks(path, image_ids, classes, METHOD, levels, stage)
