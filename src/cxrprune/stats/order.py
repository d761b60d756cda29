"""A distribution-free confidence interval for a median: the order-statistic interval of the
sign test (``scipy.stats.quantile_test``), exact for any continuous distribution.

Used for the paired latency ratio of a compressed model to the dense one: per-round timing
ratios are skewed (a scheduler hiccup doubles one round) and far from normal, so neither a
t interval nor a percentile bootstrap of a handful of rounds would hold its level.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from cxrprune.stats.checks import probability

MIN_FOR_95 = 6  # with 5 values the widest order-statistic interval [min, max] covers 93.75% only


def median_interval(values, level: float = 0.95) -> tuple[float, float]:
    """``(lo, hi)``: an interval covering the population median with probability >= ``level``;
    ``(nan, nan)`` with fewer values than that level needs or non-finite values."""
    level = probability(level, "level")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        return math.nan, math.nan
    ci = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(level)
    lo, hi = float(ci.low), float(ci.high)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (math.nan, math.nan)
