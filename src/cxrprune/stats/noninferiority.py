"""Non-inferiority: "not significantly worse" is not "safe".

A paired test of "is the compressed model worse?" that fails to reject says nothing when the
seeds are few or disagree: noise then counts as safety, and the noisier the study the safer
everything looks. Non-inferiority turns the burden round (Blackwelder 1982; Wellek 2010):
with paired differences ``d = metric_compressed - metric_dense`` (per seed or per unit;
absolute or relative, the caller decides) and a margin ``m > 0`` the largest acceptable drop,

    H0: mean(d) <= -m   (worse by the margin or more)   vs   H1: mean(d) > -m,

by a one-sided one-sample t test of ``d + m``. Rejecting H0 shows the drop is smaller than
the margin; the one-sided (1 - alpha) lower confidence bound of the mean then lies above -m.

Over compression levels :func:`fixed_sequence` tests from the lowest level up, each at full
alpha, and stops at the first failure (Maurer, Hothorn & Lehmacher 1995): the family-wise
error stays at alpha because a level is tested only if every lower one was rejected, and
unlike Holm no level pays for the number of levels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from cxrprune.stats import checks
from cxrprune.stats.power import t_test_mde
from cxrprune.stats.results import plain


@dataclass(frozen=True)
class NIResult:
    """One non-inferiority test; ``measured`` False (with ``reason``) when it cannot be done.

    ``lower_bound``: one-sided (1 - alpha) lower confidence bound of mean(d).
    ``mde``: the smallest margin this test would establish with probability ``power`` if the
    true mean difference were 0 and the SD the observed one (exact noncentral t); a margin
    below ``mde`` is one this sample could rarely have shown even for a lossless model.
    """

    n: int
    margin: float
    alpha: float
    mean: float | None
    sd: float | None
    lower_bound: float | None
    p: float | None
    noninferior: bool
    mde: float | None
    power: float
    measured: bool
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


@dataclass(frozen=True)
class SequenceStep:
    """One level of a fixed sequence: its test and whether the procedure reached it."""

    level: float
    tested: bool
    passed: bool  # tested and non-inferior
    result: NIResult


@dataclass(frozen=True)
class FixedSequenceResult:
    """Levels ascending; ``largest_passed`` is None when the lowest level already failed.
    Untested steps carry their result for information only: no claim is made for them."""

    largest_passed: float | None
    first_failed: float | None
    margin: float
    alpha: float
    steps: tuple[SequenceStep, ...]

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def noninferior(diffs: Any, margin: float, *, alpha: float = 0.05, power: float = 0.8) -> NIResult:
    """One-sided t test of H0 ``mean(diffs) <= -margin``; non-inferior iff ``p <= alpha``.

    Fewer than 2 differences, or all of them equal (no standard error), is "not measured":
    ``noninferior`` False, ``p`` None and a ``reason``.
    """
    d = checks.finite(checks.float_array(diffs, "diffs", 1), "diffs")
    margin = _margin(margin)
    alpha = checks.probability(alpha, "alpha")
    power = checks.probability(power, "power")
    n = int(d.size)
    mean = float(d.mean()) if n else None
    if n < 2:
        return NIResult(n, margin, alpha, mean, None, None, None, False, None, power, False,
                        f"needs at least 2 paired differences, got {n}")
    if np.ptp(d) == 0:
        return NIResult(n, margin, alpha, mean, 0.0, None, None, False, None, power, False,
                        f"all {n} differences are equal ({d[0]:g}): zero variance, no standard error")
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    df = n - 1
    p = float(special.stdtr(df, -(mean + margin) / se))  # Student t upper tail (scipy.stats.t.sf, faster)
    lower = mean - float(special.stdtrit(df, 1.0 - alpha)) * se
    mde = t_test_mde(sd, n, alpha=alpha, power=power)
    return NIResult(n, margin, alpha, mean, sd, lower, p, p <= alpha, mde, power, True, None)


def fixed_sequence(levels: Sequence[float], diffs_by_level: Mapping[float, Any] | Sequence[Any], margin: float,
                   alpha: float = 0.05, *, power: float = 0.8) -> FixedSequenceResult:
    """Fixed-sequence non-inferiority over ``levels``, lowest first, stopping at the first failure.

    ``diffs_by_level``: a mapping level -> differences, or a sequence aligned with ``levels``.
    A level that cannot be measured is a failure (nothing was shown there).
    """
    lv = checks.finite(checks.float_array(levels, "levels", 1), "levels")
    if lv.size == 0:
        checks.fail("levels", "is empty")
    if np.unique(lv).size != lv.size:
        checks.fail("levels", f"has repeated levels: {sorted(lv.tolist())}")
    margin = _margin(margin)
    alpha = checks.probability(alpha, "alpha")
    diffs = _by_level(lv, diffs_by_level)
    steps: list[SequenceStep] = []
    largest, first_failed = None, None
    for i in np.argsort(lv, kind="stable"):
        res = noninferior(diffs[i], margin, alpha=alpha, power=power)
        tested = first_failed is None
        passed = tested and res.noninferior
        if passed:
            largest = float(lv[i])
        elif tested:
            first_failed = float(lv[i])
        steps.append(SequenceStep(float(lv[i]), tested, passed, res))
    return FixedSequenceResult(largest, first_failed, margin, alpha, tuple(steps))


def _margin(margin: Any) -> float:
    return checks.nonnegative(margin, "margin", "the largest acceptable drop")


def _by_level(levels: np.ndarray, diffs_by_level: Mapping[float, Any] | Sequence[Any]) -> list[Any]:
    if isinstance(diffs_by_level, Mapping):
        keys = {float(k): v for k, v in diffs_by_level.items()}
        missing = [float(k) for k in levels if float(k) not in keys]
        if missing:
            checks.fail("diffs_by_level", f"has no differences for level(s) {missing}")
        return [keys[float(k)] for k in levels]
    if len(diffs_by_level) != levels.size:
        checks.fail("diffs_by_level", f"has {len(diffs_by_level)} entries but levels has {levels.size}")
    return list(diffs_by_level)
