"""The distribution-free interval of a median (cxrprune.stats.order) against the binomial
order statistics and a simulated coverage."""

from __future__ import annotations

import numpy as np
from scipy import stats as sst

from cxrprune.stats.order import median_interval


def test_median_interval_is_the_sign_test_interval_and_covers_at_its_level():
    """Against the binomial order statistics by hand (n = 15: the 4th and 12th values cover
    the median with probability 1 - 2 P(Binom(15, 1/2) <= 3) = 0.965), and a simulated
    coverage on a skewed distribution at least the nominal 95%; too few values: NaN."""
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=15)
    lo, hi = median_interval(x)
    s = np.sort(x)
    assert (lo, hi) == (s[3], s[11])
    assert 1 - 2 * sst.binom.cdf(3, 15, 0.5) >= 0.95
    true_median = 1.0  # of the standard lognormal
    hits = [lo <= true_median <= hi for lo, hi in (median_interval(rng.lognormal(size=15)) for _ in range(2000))]
    assert np.mean(hits) >= 0.95
    assert all(np.isnan(median_interval(rng.lognormal(size=5))))
