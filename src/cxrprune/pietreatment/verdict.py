"""One verdict per treatment of the PIE treatment study, and its error rates at this many seeds.

A treatment is compared with the baseline and with the random-drop control, each on dense
mAP and on rare-class AP (:func:`cxrprune.pietreatment.outcome.comparisons`): up to four
paired t-tests. Calling a treatment "helps" or "hurts" when any of them has p < 0.05 says so
for far more than 5% of treatments that change nothing (the tests share the treatment's
seeds; the rate is measured by :func:`error_rates` with ``holm=False``). So the verdict reads
the family's Holm-adjusted p-values (:func:`cxrprune.stats.multiplicity.holm`): "helps" when
some adjusted p is at most ``ALPHA`` and every such test favours the treatment, "hurts" for
the mirror image, "mixed" when significant tests disagree, "changes nothing significant"
otherwise, and "not tested" with a single seed. The mean relative AP change at the top level (``dap_top``) describes what pruning
does to the treated models and stays out of the verdict: it is not what a treatment is for.

:func:`error_rates` measures the rule, not the study's assumptions: it simulates each arm's
per-seed outcome as the seed's common value plus normal noise with the observed SD of the
paired differences, plants a shift in the treated arm, and counts the verdicts. It cannot
show what unequal seed noise across arms or non-normal seed outcomes would do; nor can 3
seeds tell a treatment that changes nothing from one whose effect is below the stated MDE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from cxrprune.stats import multiplicity

ALPHA = 0.05  # family-wise level of the verdict (the paired tests' own level is the same)
QUANTITIES = ("map", "rare_ap")  # the outcomes a treatment's verdict is about; higher is better for both
HELPS, HURTS, MIXED, NO_CHANGE = "helps", "hurts", "mixed", "changes nothing significant"
UNTESTED = "not tested (fewer than 2 seeds)"
REFERENCES = ("baseline", "remove_random")
RULE = (f"Holm-adjusted over the treatment's paired t-tests (dense mAP and rare-class AP against the baseline "
        f"and, where run, the random-drop control): '{HELPS}' or '{HURTS}' when an adjusted p is at most "
        f"{ALPHA:g} and every such test points the same way, '{MIXED}' when they disagree, otherwise '{NO_CHANGE}'")


def decide(mean_diffs: Sequence[float], adjusted: Sequence[float], alpha: float = ALPHA) -> str:
    """The verdict from each test's mean difference (treatment minus reference) and adjusted p
    (NaN for a test that could not be done, which never counts as significant)."""
    d = np.asarray(mean_diffs, dtype=np.float64)
    significant = np.nan_to_num(np.asarray(adjusted, dtype=np.float64), nan=np.inf) <= alpha
    up, down = bool((significant & (d > 0)).any()), bool((significant & (d < 0)).any())
    return MIXED if up and down else HELPS if up else HURTS if down else NO_CHANGE


def verdicts(by_reference: Mapping[str, Mapping[str, Mapping]], seeds: int, simulations: int = 4000
             ) -> dict[str, dict]:
    """``{treatment: {verdict, tests, left_out, rule, calibration}}`` for every treatment
    compared with the baseline, from ``{reference: comparisons(results, reference)}`` over
    ``seeds`` seeds. ``tests`` lists each test of the family with its raw and Holm-adjusted p;
    ``left_out`` names the tests that could not be done (fewer than 2 seeds), which the
    adjustment does not count; ``calibration`` is :func:`calibration` for this family, from
    ``simulations`` simulated studies (0: not measured)."""
    out = {}
    for treatment in by_reference.get("baseline", {}):
        family = [(ref, key, by_reference[ref][treatment][key]) for ref in REFERENCES
                  if treatment in by_reference.get(ref, {}) for key in QUANTITIES]
        raw = [np.nan if r.get("p") is None else float(r["p"]) for _, _, r in family]
        adjusted = multiplicity.holm(raw).adjusted
        tests = [{"reference": ref, "quantity": key, "mean_diff": r.get("mean_diff"), "p": p, "p_holm": a}
                 for (ref, key, r), p, a in zip(family, raw, adjusted)]
        diffs = [np.nan if t["mean_diff"] is None else t["mean_diff"] for t in tests]
        untested = all(np.isnan(raw))
        out[treatment] = {"verdict": UNTESTED if untested else decide(diffs, adjusted),
                          "tests": [{**t, "p": _none(t["p"]), "p_holm": _none(t["p_holm"])} for t in tests],
                          "left_out": [f"{t['quantity']} vs {t['reference']}: fewer than 2 seeds" for t in tests
                                       if np.isnan(t["p"])],
                          "rule": RULE,
                          "calibration": calibration(by_reference["baseline"][treatment], seeds,
                                                     treatment in by_reference.get("remove_random", {}),
                                                     simulations)}
    return out


def error_rates(sd: Mapping[str, float], seeds: int, shift: Mapping[str, float] | None = None,
                control: bool = True, holm: bool = True, simulations: int = 4000, seed: int = 0) -> dict[str, float]:
    """How often each verdict comes out for a treatment whose true outcome is the baseline's
    plus ``shift`` (per quantity in ``QUANTITIES``; none: the null), with ``seeds`` seeds, the
    paired differences' SD ``sd`` per quantity and, with ``control``, a random-drop control
    equal to the baseline. ``holm=False`` is the unadjusted rule (any p <= ALPHA), for contrast."""
    shift = dict(shift or {})
    rng = np.random.default_rng(seed)
    arms = ("treatment", "baseline", "remove_random") if control else ("treatment", "baseline")
    counts = dict.fromkeys((HELPS, HURTS, MIXED, NO_CHANGE), 0)
    # each arm's per-seed outcome: a per-seed common value (cancels in the pairing) plus noise
    # of SD sd/sqrt(2), so that a paired difference between two arms has SD sd
    draws = {k: {a: rng.normal(0.0, sd[k] / np.sqrt(2), size=(simulations, seeds))
                 + (shift.get(k, 0.0) if a == "treatment" else 0.0) for a in arms} for k in QUANTITIES}
    diffs, pvals = [], []
    for ref in arms[1:]:
        for k in QUANTITIES:
            a, b = draws[k]["treatment"], draws[k][ref]
            diffs.append((a - b).mean(axis=1))
            pvals.append(stats.ttest_rel(a, b, axis=1).pvalue)
    diffs, pvals = np.column_stack(diffs), np.column_stack(pvals)
    for d, p in zip(diffs, pvals):
        counts[decide(d, multiplicity.holm(p).adjusted if holm else p)] += 1
    return {v: n / simulations for v, n in counts.items()}


def calibration(comparisons: Mapping[str, Mapping], seeds: int, control: bool, simulations: int = 4000,
                seed: int = 0) -> dict:
    """The rule's error rates for one treatment at the study's seeds and its observed SDs of
    the paired differences against the baseline: how often it says anything but "changes
    nothing significant" when nothing changes, and how often it says "hurts" when the
    treatment lowers one quantity by that quantity's single-test MDE (80% power for that
    test alone; the adjustment costs some of it); and, for contrast, how often "any test at
    p <= ALPHA" would say something when nothing changes. Null when a SD or MDE is missing."""
    sd = {k: comparisons[k].get("sd_diff") for k in QUANTITIES}
    mde = {k: comparisons[k].get("mde") for k in QUANTITIES}
    if simulations <= 0 or any(v is None or not v > 0 for v in (*sd.values(), *mde.values())):
        return {"false_positive_rate": None, "power_hurts_at_mde": None, "unadjusted_false_positive_rate": None,
                "simulations": 0}
    null = error_rates(sd, seeds, control=control, simulations=simulations, seed=seed)
    unadjusted = error_rates(sd, seeds, control=control, holm=False, simulations=simulations, seed=seed)
    power = {k: error_rates(sd, seeds, {k: -mde[k]}, control=control, simulations=simulations, seed=seed + 1 + i)[HURTS]
             for i, k in enumerate(QUANTITIES)}
    return {"false_positive_rate": 1.0 - null[NO_CHANGE], "power_hurts_at_mde": power,
            "unadjusted_false_positive_rate": 1.0 - unadjusted[NO_CHANGE], "simulations": simulations,
            "how": "simulated normal seed outcomes with the observed SDs (not planted in images)"}


def _none(v: float) -> float | None:
    return None if v is None or np.isnan(v) else float(v)
