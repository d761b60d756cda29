"""What the study's stages share: its pipeline file and its training settings."""

from __future__ import annotations

import dataclasses

from cxrprune.core.config import Params, TrainConfig
from cxrprune.core.layout import INTERVENTION_STUDY

STUDY_FILE = INTERVENTION_STUDY
METHOD = "l1"


def train_config(params: Params) -> TrainConfig:
    """The main study's training settings, with ``intervention.epochs`` when it is set."""
    return dataclasses.replace(params.train, epochs=params.intervention.epochs or params.train.epochs)
