"""The sign-flip (paired permutation) test of a mean within-unit difference.

The unit is what the claim is about (here: a class, compared with itself under two
conditions). Under the null that each unit's difference is symmetric about 0, flipping the
signs of the differences leaves their joint distribution unchanged (Fisher 1935; Good 2005,
ch. 3), so the test's false-positive rate is at most ``alpha`` for any symmetric noise, any
spread per unit, and any number of units: no normality, unlike the one-sample t-test. Exact
enumeration of all ``2^n`` sign vectors up to :data:`EXACT_MAX` units, Monte Carlo above
(:func:`cxrprune.stats.permutation.monte_carlo_p`, a level-alpha test for any number of
draws). The interval beside it is the t interval of the mean, labelled as such: a sign-flip
interval (inverting the test) would cost a search for a number that readers take as "about
mean +- 2 SE" anyway. What it cannot show: a difference that is not symmetric under the null
(e.g. units whose two conditions differ in noise and in skew) breaks the premise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from cxrprune.stats import checks
from cxrprune.stats.permutation import count_extreme, exact_p, monte_carlo_p
from cxrprune.stats.results import plain

EXACT_MAX = 16  # 2^16 = 65,536 sign vectors: exact; above, Monte Carlo draws


@dataclass(frozen=True)
class SignFlipResult:
    n: int  # units with a defined difference
    mean: float | None
    ci_low: float | None  # t interval of the mean at ``level``
    ci_high: float | None
    p: float | None  # two-sided sign-flip p of the mean
    exact: bool
    draws: int  # Monte Carlo draws (0 when exact)
    level: float

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def sign_flip_test(differences: Any, *, draws: int = 20_000, seed: int = 0, level: float = 0.95) -> SignFlipResult:
    """Two-sided sign-flip test that the mean of ``differences`` (NaN left out: the caller lists
    them) is 0, with the mean's t interval. Fewer than 2 differences: everything but ``n`` null."""
    d = checks.float_array(differences, "differences", 1)
    d = d[~np.isnan(d)]
    level = checks.probability(level, "level")
    n = int(d.size)
    if n < 2:
        return SignFlipResult(n, float(d.mean()) if n else None, None, None, None, n <= EXACT_MAX, 0, level)
    observed = float(d.mean())
    if n <= EXACT_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        null = signs @ d / n
        p = exact_p(count_extreme(observed, null, "two-sided"), len(null))
        used = 0
    else:
        rng = np.random.default_rng(seed)
        null = np.empty(draws)
        for start in range(0, draws, 4096):  # blocks: memory stays small for many units
            k = min(4096, draws - start)
            null[start:start + k] = rng.choice((-1.0, 1.0), size=(k, n)) @ d / n
        p = monte_carlo_p(count_extreme(observed, null, "two-sided"), draws)
        used = draws
    sd = float(d.std(ddof=1))
    if sd > 0:
        low, high = stats.t.interval(level, n - 1, loc=observed, scale=sd / np.sqrt(n))
    else:
        low = high = observed
    return SignFlipResult(n, observed, float(low), float(high), float(p), used == 0, used, level)
