"""Weight magnitudes of a trained model: are the weights "naturally sparse"? (Analysis 6).

Collects |w| of every weight that L1 pruning ranks (every Conv2d and Linear ``weight``, as
:func:`cxrprune.training.models.prunable_parameters` defines it), histograms it (shown with a log
count axis), and reports which fraction lies below a few thresholds: a large mass near
zero is why a magnitude pruner can remove most weights before accuracy moves.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrprune.training.models import prunable_parameters

DEFAULT_THRESHOLDS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)


def weight_magnitudes(model: nn.Module) -> np.ndarray:
    """All |w| of the prunable weights, concatenated into one float32 vector."""
    with torch.no_grad():
        parts = [getattr(m, name).detach().abs().flatten().to("cpu", torch.float32)
                 for m, name in prunable_parameters(model)]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(parts).numpy()


def magnitude_histogram(magnitudes: np.ndarray, bins: int = 100) -> pd.DataFrame:
    """Equal-width histogram of |w| from 0 to max |w|: ``abs_weight`` (bin centre), ``bin_left``,
    ``bin_right``, ``count``. Bins start at 0 so the mass near zero is visible as such."""
    mags = np.asarray(magnitudes, dtype=np.float64)
    top = float(mags.max()) if mags.size else 1.0
    if top <= 0:
        top = 1.0  # an all-zero model still gets a well-formed histogram
    counts, edges = np.histogram(mags, bins=bins, range=(0.0, top))
    return pd.DataFrame({
        "abs_weight": (edges[:-1] + edges[1:]) / 2,
        "bin_left": edges[:-1],
        "bin_right": edges[1:],
        "count": counts.astype(np.int64),
    })


def threshold_key(threshold: float) -> str:
    """``frac_below_1e-2`` for 0.01 (a power of ten), else ``frac_below_<%g>``."""
    exponent = round(math.log10(threshold)) if threshold > 0 else 0
    if threshold > 0 and math.isclose(threshold, 10.0 ** exponent, rel_tol=1e-9):
        return f"frac_below_1e{exponent}"
    return f"frac_below_{threshold:g}"


def magnitude_summary(magnitudes: np.ndarray,
                      thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """Fraction of weights with |w| strictly below each threshold, plus count, median and max."""
    mags = np.asarray(magnitudes, dtype=np.float64)
    n = int(mags.size)
    out: dict[str, float] = {"n_weights": n}
    for t in thresholds:
        out[threshold_key(t)] = float(np.mean(mags < t)) if n else float("nan")
    out["median_abs"] = float(np.median(mags)) if n else float("nan")
    out["max_abs"] = float(mags.max()) if n else float("nan")
    return out
