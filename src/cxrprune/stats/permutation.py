"""p-values from a permutation distribution, shared by the Mantel and enrichment tests.

Exact enumeration counts the observed arrangement among all arrangements, so
``p = count / total`` (the identity is one of them). A Monte Carlo test adds the observed
statistic to the draws, ``p = (1 + count) / (1 + draws)`` (Davison & Hinkley 1997, eq. 4.11;
Phipson & Smyth 2010): never 0, and a level-alpha test for any number of draws.

Two-sided comes in two forms. :func:`count_extreme` compares absolute values, right for a
statistic whose permutation distribution is centred at 0 (a Mantel correlation of centred
scores). :func:`doubled_tail_p` doubles the smaller one-sided p-value, right for one whose
null is not centred (the enrichment rho): ``|stat|`` would then mostly measure the offset.
"""

from __future__ import annotations

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")

TOLERANCE = 1e-10
"""Statistics this close to the observed one count as ties, hence as extreme: permutations
that give the same correlation in exact arithmetic differ by rounding in floating point."""


def count_extreme(observed: float, null: np.ndarray, alternative: str) -> int:
    """How many of the ``null`` statistics are at least as extreme as ``observed``.

    ``two-sided`` compares absolute values. An undefined (NaN) null statistic counts as
    extreme: the conservative choice, since it cannot be shown to be less extreme.
    """
    null = np.asarray(null, dtype=np.float64)
    if alternative == "two-sided":
        hit = np.abs(null) >= abs(observed) - TOLERANCE
    elif alternative == "greater":
        hit = null >= observed - TOLERANCE
    elif alternative == "less":
        hit = null <= observed + TOLERANCE
    else:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return int(np.count_nonzero(hit | np.isnan(null)))


def exact_p(count: int, total: int) -> float:
    """Fraction of all arrangements (identity included) at least as extreme."""
    return count / total


def monte_carlo_p(count: int, draws: int) -> float:
    """Monte Carlo permutation p-value with the observed statistic counted once."""
    return (1 + count) / (1 + draws)


def doubled_tail_p(observed: float, null: np.ndarray, draws: int) -> float:
    """Two-sided Monte Carlo p-value ``min(1, 2 min(p_less, p_greater))`` from ``draws`` null
    statistics: a level-alpha test whatever the null's centre or skew."""
    p_greater = monte_carlo_p(count_extreme(observed, null, "greater"), draws)
    p_less = monte_carlo_p(count_extreme(observed, null, "less"), draws)
    return min(1.0, 2.0 * min(p_greater, p_less))
