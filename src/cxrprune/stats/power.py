"""The smallest effect a t test of n paired differences could detect (its MDE).

A test that finds "no significant difference" with 3 seeds says little unless the reader
knows how large a difference those seeds could have found: the minimum detectable effect
at level ``alpha`` and power ``power`` is the true mean difference that the test rejects
with probability ``power`` when the differences' SD is ``sd``. Exact, from the noncentral t
(the t statistic of n differences has n - 1 degrees of freedom and noncentrality
``delta = effect / (sd / sqrt(n))``): the normal approximation ``(z_{1-alpha} + z_power) * se``
gives 0.62 of it at 3 seeds one-sided and 0.50 two-sided (alpha 0.05, power 0.8), where the
t critical value alone is 2.9 (one-sided) instead of 1.6.

Shared by the non-inferiority test (:mod:`cxrprune.stats.noninferiority`, one-sided: the
smallest margin that could be shown for a lossless model) and the PIE treatment study's
paired comparisons (:mod:`cxrprune.pietreatment.outcome`, two-sided).
"""

from __future__ import annotations

import functools
import math

from scipy import optimize
from scipy import stats as sps

from cxrprune.stats import checks


def t_test_mde(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8, two_sided: bool = False) -> float:
    """The true mean difference a t test of ``n`` differences with SD ``sd`` rejects with
    probability ``power`` at level ``alpha`` (``two_sided``: H0 mean = 0 against != 0, both
    tails counted; else H1 mean > 0). ``sd`` is in the differences' units, and so is the MDE."""
    n = checks.count(n, "n", minimum=2)
    alpha = checks.probability(alpha, "alpha")
    power = checks.probability(power, "power")
    if two_sided and power <= alpha:
        checks.fail("power", f"must exceed alpha ({alpha:g}) for a two-sided test: no effect has a lower power")
    s = checks.nonnegative(sd, "sd")
    return noncentrality(n, alpha, power, two_sided=two_sided) * (s / math.sqrt(n))  # delta x standard error


@functools.lru_cache(maxsize=256)
def noncentrality(n: int, alpha: float, power: float, *, two_sided: bool = False) -> float:
    """delta with P(reject | T noncentral t, n - 1 df, noncentrality delta) = power, where
    reject is ``T > t_{1-alpha}`` (one-sided) or ``|T| > t_{1-alpha/2}`` (two-sided)."""
    df = n - 1
    crit = sps.t.isf(alpha / 2 if two_sided else alpha, df)

    def rejected(nc: float) -> float:
        upper_tail = sps.nct.sf(crit, df, nc)
        # P(T < -crit) as P(T' > crit) with T' of noncentrality -nc: the same number, but
        # scipy's lower tail is NaN where it underflows at large nc (scipy 1.17).
        return upper_tail + sps.nct.sf(crit, df, -nc) if two_sided else upper_tail

    # Two-sided power is symmetric in delta and smallest (alpha) at 0: search delta >= 0.
    lower = 0.0 if two_sided else -10.0
    upper = crit + sps.norm.isf(1 - power) + 10.0
    while rejected(upper) < power:
        upper *= 2
    return float(optimize.brentq(lambda nc: rejected(nc) - power, lower, upper, xtol=1e-12))
