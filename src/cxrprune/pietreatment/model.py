"""The study's training settings: the main study's, with ``pie_treatment.epochs`` when it is
set (each model is trained and pruned by :mod:`cxrprune.compression.retrain`)."""

from __future__ import annotations

import dataclasses

from cxrprune.core.config import Params, TrainConfig


def train_config(params: Params) -> TrainConfig:
    """The main study's training settings, with ``pie_treatment.epochs`` when it is set."""
    epochs = params.pie_treatment.epochs or params.train.epochs
    return dataclasses.replace(params.train, epochs=epochs)
