"""One model of the study: trained with the main study's settings (on a row subset, with
per-image loss weights), then L1-pruned and predicting a set of images at some levels."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.config import Params, TrainConfig
from cxrprune.core.runtime import pick_device
from cxrprune.pietreatment.study import METHOD
from cxrprune.training.loop import TrainResult, train_model


def train_config(params: Params) -> TrainConfig:
    """The main study's training settings, with ``pie_treatment.epochs`` when it is set."""
    epochs = params.pie_treatment.epochs or params.train.epochs
    return dataclasses.replace(params.train, epochs=epochs)


def train_and_predict(params: Params, seed: int, train: tuple[pd.DataFrame, np.ndarray],
                      val: tuple[pd.DataFrame, np.ndarray], classes: list[str], images: np.ndarray,
                      levels: Sequence[float], *, rows: np.ndarray | None = None,
                      sample_weights: np.ndarray | None = None) -> tuple[TrainResult, list]:
    """Train one seed (on ``rows`` of the training table, with ``sample_weights``), then
    predict ``images`` with its L1-pruned versions at ``levels``."""
    result = train_model(train_config(params), seed, train[0], train[1], val[0], val[1], classes,
                         rows=rows, sample_weights=sample_weights)
    x = torch.from_numpy(np.array(images))
    results = prune_and_predict(result.model, x, [METHOD], list(levels), seed, params.prune.batch_size,
                                pick_device(params.train.device),
                                autocast=None if params.prune.autocast == "none" else params.prune.autocast,
                                allow_tf32=params.prune.allow_tf32)
    return result, results
