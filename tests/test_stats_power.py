"""cxrprune.stats.power: the minimum detectable effect of a t test of n differences.

Oracles: Monte Carlo of scipy's one-sample t test (the definition: the true mean at which
the test rejects with the stated power), scipy.stats.nct's power at the returned
noncentrality, and the normal approximation as a lower bound.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cxrprune.core.errors import CxrpruneError
from cxrprune.stats.power import noncentrality, t_test_mde


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_power_at_the_noncentrality_is_the_requested_power(n, two_sided):
    df, delta = n - 1, noncentrality(n, 0.05, 0.8, two_sided=two_sided)
    crit = stats.t.isf(0.025 if two_sided else 0.05, df)
    power = stats.nct.sf(crit, df, delta) + (stats.nct.sf(crit, df, -delta) if two_sided else 0.0)
    assert power == pytest.approx(0.8, abs=1e-9)
    z = stats.norm.isf(0.025 if two_sided else 0.05) + stats.norm.isf(0.2)
    assert delta > z  # the normal approximation understates it, most at few seeds


@pytest.mark.parametrize("two_sided, alternative", [(False, "greater"), (True, "two-sided")])
def test_mde_is_rejected_with_80_percent_power_by_simulation(two_sided, alternative):
    """3 differences, SD 0.02, true mean = the MDE: 20,000 samples, MC SE 0.0028."""
    sd, reps = 0.02, 20_000
    mde = t_test_mde(sd, 3, alpha=0.05, power=0.8, two_sided=two_sided)
    d = np.random.default_rng(5).normal(mde, sd, size=(reps, 3))
    rate = (stats.ttest_1samp(d, 0.0, axis=1, alternative=alternative).pvalue <= 0.05).mean()
    assert abs(rate - 0.8) <= 4 * np.sqrt(0.8 * 0.2 / reps)


def test_mde_scales_with_the_sd_and_is_zero_without_spread():
    assert t_test_mde(0.04, 3) == pytest.approx(2 * t_test_mde(0.02, 3))
    assert t_test_mde(0.0, 3, two_sided=True) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(sd=0.1, n=1), "n: must be an integer >= 2"),
    (dict(sd=-0.1, n=3), "sd: must be a finite number >= 0"),
    (dict(sd=float("nan"), n=3), "sd: must be a finite number >= 0"),
    (dict(sd="x", n=3), "sd: must be a number >= 0"),
    (dict(sd=0.1, n=3, alpha=1.5), "alpha: must be in"),
    (dict(sd=0.1, n=3, alpha=0.1, power=0.05, two_sided=True), "power: must exceed alpha"),
])
def test_bad_arguments_are_one_error_naming_the_argument(kwargs, message):
    with pytest.raises(CxrpruneError, match=message):
        t_test_mde(**kwargs)
