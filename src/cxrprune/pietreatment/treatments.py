"""What each treatment trains on: which training rows, with which loss weights.

- ``baseline``: every training image, no weights (the main study's exact training).
- ``remove``: the PIEs dropped.
- ``upweight``: every image; a PIE's loss weighted by ``pie_treatment.weight``, others 1.
- ``remove_random``: the control; exactly as many non-PIE images dropped as there are PIEs,
  matched on class where possible. An image's stratum is its rarest positive class (by
  training count; images without a positive form one more stratum). For every PIE in a
  stratum one non-PIE of that stratum is drawn at random; a stratum with too few non-PIEs
  hands its shortfall to a uniform draw from the non-PIEs left. The draw depends on the
  training seed, so the control's seeds average over draws, not over one lucky draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrprune.core.errors import DataError


@dataclass(frozen=True)
class TrainingSet:
    treatment: str
    rows: np.ndarray  # sorted indices into the training table
    weights: np.ndarray | None  # per row of the whole training table, or None (plain loss)

    def counts(self, is_pie: np.ndarray) -> dict[str, float | int]:
        """What the set is, counted (``train_set.json``)."""
        is_pie = np.asarray(is_pie, dtype=bool)
        kept = np.zeros(len(is_pie), dtype=bool)
        kept[self.rows] = True
        w = np.ones(len(is_pie)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        return {"n_train": int(kept.sum()), "n_dropped": int((~kept).sum()),
                "pies_kept": int((kept & is_pie).sum()), "pies_dropped": int((~kept & is_pie).sum()),
                "n_upweighted": int((kept & (w != 1.0)).sum()), "weight_sum": float(w[kept].sum())}


def strata(y: np.ndarray) -> np.ndarray:
    """Each image's rarest positive class (column index), -1 when it has no positive."""
    y = np.asarray(y, dtype=np.int64)
    totals = y.sum(axis=0).astype(np.float64)
    rarity = np.where(y > 0, totals[None, :], np.inf)
    return np.where(np.isfinite(rarity.min(axis=1)), np.argmin(rarity, axis=1), -1)


def matched_random_drop(y: np.ndarray, is_pie: np.ndarray, seed: int) -> np.ndarray:
    """Sorted indices of ``is_pie.sum()`` non-PIE images, drawn class-matched (module docstring)."""
    is_pie = np.asarray(is_pie, dtype=bool)
    n = int(is_pie.sum())
    if int((~is_pie).sum()) < n:
        raise DataError(f"the random control needs {n} non-PIE training images to drop, only {int((~is_pie).sum())} "
                        f"exist; lower analyze.pie_fraction")
    rng = np.random.default_rng([seed, 12])  # 12: this study's issue, so the draw is not the training's stream
    stratum = strata(y)
    chosen: list[np.ndarray] = []
    shortfall = 0
    for s in np.unique(stratum[is_pie]):
        need = int((is_pie & (stratum == s)).sum())
        pool = np.flatnonzero(~is_pie & (stratum == s))
        take = min(need, len(pool))
        chosen.append(rng.choice(pool, size=take, replace=False))
        shortfall += need - take
    taken = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    if shortfall:
        rest = np.setdiff1d(np.flatnonzero(~is_pie), taken)
        taken = np.concatenate([taken, rng.choice(rest, size=shortfall, replace=False)])
    return np.sort(taken.astype(np.int64))


def training_set(treatment: str, is_pie: np.ndarray, y: np.ndarray, weight: float, seed: int) -> TrainingSet:
    is_pie = np.asarray(is_pie, dtype=bool)
    everyone = np.arange(len(is_pie), dtype=np.int64)
    if treatment == "baseline":
        return TrainingSet(treatment, everyone, None)
    if treatment == "remove":
        return TrainingSet(treatment, np.flatnonzero(~is_pie).astype(np.int64), None)
    if treatment == "upweight":
        return TrainingSet(treatment, everyone, np.where(is_pie, float(weight), 1.0))
    if treatment == "remove_random":
        return TrainingSet(treatment, np.setdiff1d(everyone, matched_random_drop(y, is_pie, seed)), None)
    raise ValueError(f"unknown treatment {treatment!r}")
