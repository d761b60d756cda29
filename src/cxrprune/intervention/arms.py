"""What each arm of the frequency intervention hides from the training loss.

The classes are split at random into halves A and B (``intervention.assign_seed``). Arm
``rare_a`` keeps ``ceil(keep x P)`` of each A class's P training positives in the loss and
weights the label of every other positive 0 (masked out of the BCE, not relabelled: a hidden
positive is neither a positive nor a negative for that class, so no label noise is added);
``rare_b`` does the same to the B classes; ``control`` hides nothing. The images, the
negatives and every other class's labels are untouched, so each class is rare in one arm and
common in the other, and the only thing that differs between them is how many positives of
that class the loss sees. Which positives a class keeps is drawn once per class (from
``assign_seed`` and the class's index), the same for every model seed: the seeds then vary
the training, not the intervention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrprune.core.config import INTERVENTION_ARMS
from cxrprune.core.errors import ConfigError, DataError

ARMS = INTERVENTION_ARMS
HALVES = ("A", "B")
RARE_HALF = {"rare_a": "A", "rare_b": "B", "control": None}


def halves(classes: Sequence[str], seed: int) -> dict[str, str]:
    """Class -> "A" or "B": a random half of the classes (the larger half when odd) is A."""
    order = np.random.default_rng(seed).permutation(len(classes))
    in_a = set(order[: math.ceil(len(classes) / 2)].tolist())
    return {c: "A" if i in in_a else "B" for i, c in enumerate(classes)}


def rare_classes(arm: str, half: dict[str, str]) -> list[str]:
    """The classes ``arm`` makes rare, in class order."""
    if arm not in RARE_HALF:
        raise ConfigError(f"--arm {arm} is not one of the intervention arms {', '.join(ARMS)}")
    return [c for c, h in half.items() if h == RARE_HALF[arm]]


def kept_count(positives: int, keep: float) -> int:
    """Training positives a class keeps in its rare arm: ``ceil(keep x positives)``."""
    return math.ceil(keep * positives)


def check(labels: pd.DataFrame, classes: Sequence[str], keep: float) -> None:
    """Every class needs a training positive, or it is rare (or absent) in both arms; one error
    naming the classes, before any work."""
    counts = labels[list(classes)].sum(axis=0)
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        raise DataError(f"training split: class(es) {', '.join(empty)} have no training positive, so the frequency "
                        f"intervention (intervention.keep {keep:g}) cannot make them common in either arm; use a "
                        f"dataset whose classes all have training positives")


def loss_weights(labels: pd.DataFrame, classes: Sequence[str], rare: Sequence[str], keep: float,
                 seed: int) -> np.ndarray:
    """(images x classes) float32 loss weights: 0 for the hidden positives of the ``rare``
    classes, 1 everywhere else (see the module docstring)."""
    check(labels, classes, keep)
    y = labels[list(classes)].to_numpy()
    w = np.ones(y.shape, dtype=np.float32)
    for c in rare:
        j = list(classes).index(c)
        positives = np.flatnonzero(y[:, j] > 0)
        rng = np.random.default_rng([seed, j])  # per class: the same positives whichever arm asks
        kept = rng.choice(positives, size=kept_count(len(positives), keep), replace=False)
        hidden = np.setdiff1d(positives, kept)
        w[hidden, j] = 0.0
    return w


def seen_positives(labels: pd.DataFrame, classes: Sequence[str], weights: np.ndarray) -> pd.Series:
    """Training positives per class that the loss sees (weight > 0)."""
    y = labels[list(classes)].to_numpy() > 0
    return pd.Series((y & (weights > 0)).sum(axis=0), index=list(classes), name="seen_positives")
