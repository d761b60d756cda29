"""One model of a retraining study: trained on a changed training set (a row subset, per-image
or per-label loss weights), then L1-pruned (or another method) at some levels and predicting
a set of images. The PIE treatment and frequency intervention studies share it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from cxrprune.compression.predictions import LevelResult
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.config import Params, TrainConfig
from cxrprune.core.numerics import autocast_option
from cxrprune.core.runtime import pick_device
from cxrprune.training.loop import TrainResult, train_model


def train_prune_predict(params: Params, cfg: TrainConfig, seed: int, train: tuple[pd.DataFrame, np.ndarray],
                        val: tuple[pd.DataFrame, np.ndarray], classes: list[str], images: np.ndarray,
                        levels: Sequence[float], method: str = "l1", *, rows: np.ndarray | None = None,
                        sample_weights: np.ndarray | None = None) -> tuple[TrainResult, list[LevelResult]]:
    """Train one seed with ``cfg`` (on ``rows`` of the training table, with ``sample_weights``:
    one per image, or one per image and class), then predict ``images`` with its
    ``method``-compressed versions at ``levels`` (``params.prune``'s batch size and numerics)."""
    result = train_model(cfg, seed, train[0], train[1], val[0], val[1], classes,
                         rows=rows, sample_weights=sample_weights)
    x = torch.from_numpy(np.array(images))
    results = prune_and_predict(result.model, x, [method], list(levels), seed, params.prune.batch_size,
                                pick_device(params.train.device),
                                autocast=autocast_option(params.prune.autocast),
                                allow_tf32=params.prune.allow_tf32)
    return result, results
