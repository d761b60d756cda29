"""What the study's stages share: the compression method and the training settings (its
pipeline file is ``cxrprune.core.layout.INTERVENTION_STUDY``)."""

from __future__ import annotations

import dataclasses

from cxrprune.core.config import Params, TrainConfig

METHOD = "l1"


def train_config(params: Params) -> TrainConfig:
    """The main study's training settings, with ``intervention.epochs`` when it is set."""
    return dataclasses.replace(params.train, epochs=params.intervention.epochs or params.train.epochs)
