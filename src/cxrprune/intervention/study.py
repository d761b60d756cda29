"""What the study's stages share: its pipeline file, the checks run before any work, and its
training settings."""

from __future__ import annotations

import dataclasses

from cxrprune.core.config import Params, TrainConfig
from cxrprune.core.errors import ConfigError

STUDY_FILE = "studies/frequency-intervention/dvc.yaml"
METHOD = "l1"


def check_seed(params: Params, seed: int) -> None:
    if seed not in params.intervention.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml intervention.seeds {params.intervention.seeds}")


def train_config(params: Params) -> TrainConfig:
    """The main study's training settings, with ``intervention.epochs`` when it is set."""
    return dataclasses.replace(params.train, epochs=params.intervention.epochs or params.train.epochs)
