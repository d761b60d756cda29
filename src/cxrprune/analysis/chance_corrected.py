"""Chance-corrected forgetting: how much of a class's above-chance performance a k-sparse model keeps.

Why not the paper's relative change: at 95% sparsity the pruned model is at chance (median
AUROC ~0.5), so each class's AP sits at its chance level ``c`` and the paper's
``dAP@95 = AP_95 / AP_0 - 1`` becomes ``c / AP_0 - 1``: how far above chance the dense model
*started*, not what pruning took away. A rare class has a small ``c``, so with the same loss of
separation it shows the larger relative drop, and ``rho(dAP@95, ln count) > 0`` follows from
the class frequencies alone (``tests/test_chance_corrected.py`` builds exactly that).

The statistic, per seed and class::

    retained_k = (AP_k - c) / (AP_0 - c)        (1: nothing lost, 0: down to chance)

aggregated as the median over seeds (as the paper's curves are); forgetting = 1 - retained.
The curves hold ``retained - 1 = (AP_k - AP_0) / (AP_0 - c)``
(:func:`cxrprune.analysis.forgetting.relative_ap`): the paper's formula with the dense
model's lift above chance in the denominator, and the paper's sign, so the first drop below
``-threshold`` (retained below ``1 - threshold``) and the value at 95% reuse
:mod:`cxrprune.analysis.forgetting` unchanged, and the correlation with ln(train count) is
positive in the paper's direction (rare classes forgotten more); it is minus the rho of
forgetting (1 - retained) vs ln(train count).

The AP's chance level ``c`` is the class's test prevalence P/N: the evaluate stage's AP is the
plain AP over the test images (:mod:`cxrprune.stats.metrics`, no weights), and P/N is
exactly the AP of a scorer without information (a constant score: one tie group, precision
P/N) and the baseline of the precision-recall curve. It is not exact for every chance-level
model, which is why the same retained fraction of AUROC is reported beside it:

- a random *ranking* has a higher expected AP in a finite test set,
  ``(P-1)/(N-1) + (N-P)/(N-1) * H_N / N`` (H_N the harmonic number): the excess ~H_N/N is
  5e-4 at N = 21,081 test images but of the order of P/N itself for a class with a handful of
  test positives, so a pruned model at chance with distinct scores keeps a retained AP above
  0 for exactly the rare classes: rare classes look forgotten *less*;
- the exact expectation given each block's ties does not help: the AP of a random ranking
  with few positives is right-skewed, so its median over seeds falls below its mean and rare
  classes then look forgotten *more*.

Measured by simulation when this module was written (20 classes, train counts 25..1320, test
prevalence proportional, 5 seeds, binormal scores, every class losing the same separation and
the model at chance at 95%; 100 repetitions with 761 test images): the paper's dAP@95 gives
rho > 0 at p < 0.05 in 99% of them; the AP-based statistic here in 0%, but rho < 0 at p < 0.05
in 15% (80% when the common classes collapse to a constant output, as they do in the committed
synthetic run; 15% also at 21,000 test images); against the tie-aware expectation instead,
rho > 0 in 23% (58%); the AUROC-based statistic rho > 0 in 6% (13%), rho < 0 in 3% (6%), its
median rho 0.03 (0.04). Its two-sided rate above the nominal 5% is not a lean but the test's
premise failing: a rare class's retained value is noisier (few test positives) and collapsed
classes tie, so the classes are not exchangeable under the null; the paper's own statistics
share that premise.

So the AUROC version, ``retained = (AUROC_k - 0.5) / (AUROC_0 - 0.5)``, is the one without a
lean: its chance level is exactly 0.5 for any prevalence, test size and ties, and the
Mann-Whitney statistic's null distribution is symmetric, so the median over seeds is unbiased.
Its limit: it has no bootstrap interval (the resamples hold AP only).

The first drop (first level with retained < 1 - threshold) has the same artefact in the
paper's form and in the AP-based form (rho > 0 at p < 0.05 in 100% and 93% of the null
repetitions above): AP falls faster relative to its lift for a rare class at the same loss of
separation, and a noisier curve crosses a threshold earlier. The AUROC form: 14% (a rare
class's noisier curve still crosses first), so no first drop here is free of the artefact.

Where "forgotten more" is read. The paper reads it at 95% sparsity. Where the pruned network is
at chance there (this project's ResNet10 at 32 px keeps a median of ~0 of its AUROC lift at 95%),
every class's retained value is noise around 0 and the correlation compares noise: in the
calibration draws of the generator's first frequency route (rarer signatures drawn fainter;
commit 4934c71, ``reports/calibration-*/``) its rho at 95% was negative in all ten draws, planted
or not, with p < 0.05 in three of the five planted ones. So the
verdict reads it at the *half-life* level (:func:`half_level`): the lowest level at which the
median learned class keeps at most half of its lift above chance; the 95% value is reported
beside it. The level is a function of the set of curves, not of which class has which train
count, so the permutation null of the rank correlation holds at the chosen level as at a
fixed one (the level is invariant to relabelling the classes' counts). Its false-positive rate
and power were measured with the report's other rules on planted effects (``cxrprune validate``,
``benchmarks/results/verdicts.txt``).

Classes left out of the chance-corrected correlations, each listed with its reason
(:func:`screen`):

- not learned: the dense model's AUROC interval contains (or lies below) 0.5. The interval is
  the median dense AUROC over seeds +- z * SE with the Hanley & McNeil (1982) standard error
  for the test set's P positives and N negatives. Why this one: the seeds share one test set,
  so their spread misses test sampling, which is what decides whether a class with a few test
  positives was learned at all, and a seed-level t interval shrinks towards nothing as seeds
  are added whatever P is; the AP bootstrap resamples do not cover AUROC. At AUROC = 0.5 the
  Hanley-McNeil variance equals the Mann-Whitney null variance (P + N + 1) / (12 P N), so
  "the interval contains 0.5" is the two-sided Mann-Whitney test at 1 - :data:`LEVEL` not
  rejecting. A class near chance also has a tiny ``AP_0 - c``, which would turn noise into
  huge ratios;
- dense AP at or below chance in some seed: the ratio is undefined there (it flips sign);
- no training positive (ln count undefined) or no test positive (no chance level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.analysis import forgetting
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.errors import DataError

LEVEL = 0.95  # two-sided level of the dense AUROC interval (a screen, not a study parameter)
AUROC_CHANCE = 0.5
NOT_LEARNED = "not learned: dense AUROC CI includes 0.5"
BELOW_CHANCE = "not learned: dense AUROC CI below 0.5"
NO_TRAIN = "no training positive: ln(train count) undefined"
NO_TEST = "no test positive: chance level undefined"
HALF = 0.5  # the half-life level: the median learned class keeps at most this share of its lift
TEST = ("retained = (M_k - chance) / (M_0 - chance) per seed, median over seeds; M = AP with chance = test "
        "prevalence (*_chance_corrected keys) or M = AUROC with chance = 0.5 (dauroc95, dauroc_half, "
        "first_drop_auroc); the values correlated are retained - 1 (the paper's sign: positive rho = rare classes "
        "forgotten more) vs ln(train count), Spearman/Pearson with two-sided p as for dap95; dauroc_half reads "
        "retained AUROC at the lowest level where the median learned class keeps at most half of its lift "
        "(dauroc_half_level); classes whose dense AUROC 95% interval (Hanley-McNeil) contains 0.5 or whose dense "
        "AP is at or below prevalence are left out (excluded_classes)")
# The statistics a class-level exclusion (:func:`screen`) leaves a class out of, and the
# retained quantity behind each first drop (for the reason of a drop not reached).
STATISTICS = ("first_drop_chance_corrected", "dap95_chance_corrected", "dap95_same_classes",
              "first_drop_auroc", "dauroc95", "dauroc_half")
_CURVES = {"first_drop": "relative AP change never below -{t:g}",
           "first_drop_chance_corrected": "retained AP never below {r:g}",
           "first_drop_auroc": "retained AUROC never below {r:g}"}


def chance_levels(test_labels: pd.DataFrame, classes: Sequence[str]) -> pd.Series:
    """The AP's chance level per class name: its test prevalence, the positive fraction of the
    prepared test labels (per bootstrap resample: :func:`cxrprune.analysis.uncertainty.chance_corrected_intervals`)."""
    missing = [c for c in classes if c not in test_labels.columns]
    if missing:
        raise DataError(f"test labels lack class columns {missing[:3]}; rerun the prepare stage")
    y = test_labels[list(classes)].to_numpy(dtype=np.float64)
    return pd.Series(y.mean(axis=0), index=list(classes), name="prevalence")


def hanley_mcneil_se(auroc: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """Standard error of an AUROC from P positives and N negatives (Hanley & McNeil 1982)."""
    a = np.asarray(auroc, dtype=np.float64)
    p = np.asarray(n_pos, dtype=np.float64)
    n = np.asarray(n_neg, dtype=np.float64)
    q1, q2 = a / (2 - a), 2 * a ** 2 / (1 + a)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (a * (1 - a) + (p - 1) * (q1 - a ** 2) + (n - 1) * (q2 - a ** 2)) / (p * n)
    return np.sqrt(np.maximum(var, 0.0))


def dense_auroc(per_class: pd.DataFrame, test_labels: pd.DataFrame, classes: Sequence[str],
                method: str = DENSE_REFERENCE.method, level: float = LEVEL) -> pd.DataFrame:
    """Per class (index ``class_name``): ``dense_auroc`` (median over seeds at k = 0) and its
    Hanley-McNeil interval ``dense_auroc_lo``, ``dense_auroc_hi`` (clipped to [0, 1])."""
    if "auroc" not in per_class.columns:
        raise DataError("per-class table lacks column 'auroc'; rerun the evaluate stage")
    rows = per_class[(per_class["method"] == method) & (forgetting.round_levels(per_class["level"]) == 0.0)]
    auc = rows.groupby("class_name")["auroc"].median().reindex(list(classes))
    if auc.isna().all():
        raise DataError(f"per-class table has no dense ({method}@0) AUROC; rerun the evaluate stage")
    y = test_labels[list(classes)].to_numpy(dtype=np.float64)
    n_pos = y.sum(axis=0)
    a = auc.to_numpy(dtype=np.float64)
    half = stats.norm.ppf(0.5 + level / 2) * hanley_mcneil_se(a, n_pos, len(y) - n_pos)
    return pd.DataFrame({"dense_auroc": a, "dense_auroc_lo": np.clip(a - half, 0, 1),
                         "dense_auroc_hi": np.clip(a + half, 0, 1)}, index=pd.Index(list(classes), name="class_name"))


def screen(auroc: pd.DataFrame, rel: pd.DataFrame, chance: pd.Series, counts: pd.Series) -> dict[str, str]:
    """Classes left out of every chance-corrected correlation, with the reason (class -> reason;
    the first that applies): no test positive, no training positive, not learned (the dense
    AUROC interval, :func:`dense_auroc`), or dense AP at or below chance in some seed (``rel``
    is :func:`~cxrprune.analysis.forgetting.relative_change`'s table, ``ap0`` per seed)."""
    dense = rel.drop_duplicates(["seed", "class_name"])
    below = dense.assign(at_or_below=dense["ap0"].to_numpy() <= dense["class_name"].map(chance).to_numpy())
    n_below = below.groupby("class_name")["at_or_below"].sum()
    n_seeds = below.groupby("class_name")["seed"].nunique()
    out: dict[str, str] = {}
    for c in auroc.index:
        if not chance.get(c, 0) > 0:
            out[c] = NO_TEST
        elif not counts.get(c, 0) > 0:
            out[c] = NO_TRAIN
        elif not auroc.at[c, "dense_auroc_lo"] > AUROC_CHANCE:  # NaN (undefined AUROC): not learned either
            out[c] = BELOW_CHANCE if auroc.at[c, "dense_auroc_hi"] < AUROC_CHANCE else NOT_LEARNED
        elif n_below.get(c, 0) > 0:
            out[c] = (f"dense AP at or below chance (test prevalence) in {int(n_below[c])} of {int(n_seeds[c])} "
                      f"seeds: retained AP undefined")
    return out


@dataclass(frozen=True)
class Retained:
    """One metric's chance-corrected curves, their two summaries and their correlations."""

    curves: pd.DataFrame  # median over seeds of retained - 1, sparsity x class
    at: pd.Series  # retained at the dAP sparsity (NaN where that level was not run)
    first_drop: pd.Series  # first level with retained < 1 - threshold (NaN: never)
    at_corr: forgetting.Correlation  # retained - 1 at the dAP sparsity vs ln(train count)
    drop_corr: forgetting.Correlation  # first drop vs ln(train count)
    half_level: float  # :func:`half_level` of the included classes (NaN: none or no level)
    half: pd.Series  # retained at ``half_level``
    half_corr: forgetting.Correlation  # retained - 1 at ``half_level`` vs ln(train count)


@dataclass(frozen=True)
class ChanceCorrected:
    """The chance-corrected forgettability of every class and its relation to frequency."""

    chance: pd.Series  # test prevalence per class (the AP's chance level)
    auroc: pd.DataFrame  # dense_auroc, dense_auroc_lo, dense_auroc_hi per class
    ap: Retained  # retained AP
    roc: Retained  # retained AUROC (chance 0.5)
    raw_same_classes: forgetting.Correlation  # the paper's dAP vs ln(train count), same classes as ``ap``
    excluded: dict[str, str]  # class -> reason, left out of every chance-corrected correlation
    included: list[str]  # the classes that passed :func:`screen`, in class order


def half_level(curves: pd.DataFrame, included: Sequence[str], kept: float = HALF) -> float:
    """The lowest level at which the median over the ``included`` classes of retained (``curves``
    hold retained - 1, levels k > 0) is at most ``kept``; the highest level when no level gets
    there (the most forgetting the run shows); NaN without a level or an included class. A
    class's undefined point (NaN) is left out of that level's median."""
    wanted = set(included)
    cols = [c for c in curves.columns if c in wanted]
    if not cols or curves.empty:
        return math.nan
    med = curves[cols].median(axis=1, skipna=True).to_numpy(dtype=np.float64) + 1.0
    hit = np.flatnonzero(med <= kept)  # NaN compares False
    levels = curves.index.to_numpy(dtype=np.float64)
    return float(levels[hit[0]] if len(hit) else levels[-1])


def retained(rel: pd.DataFrame, classes: Sequence[str], included: Sequence[str], counts: pd.Series,
             threshold: float, sparsity: float) -> Retained:
    """Curves (median over seeds), first drop and value at ``sparsity`` of chance-corrected
    changes ``rel`` (:func:`~cxrprune.analysis.forgetting.relative_change` with a chance
    level), correlated with ln(train count) over the ``included`` classes only."""
    curves = forgetting.forgettability_curves(rel, classes)
    drop = forgetting.first_drop(curves, threshold)
    at = forgetting.dap_at(curves, sparsity)
    keep = _only(included, classes)
    level = half_level(curves, included)
    half = forgetting.dap_at(curves, level) if math.isfinite(level) else pd.Series(math.nan, index=curves.columns)
    return Retained(curves, (at + 1).rename("retained"), drop,
                    forgetting.correlate_with_frequency(at * keep, counts),
                    forgetting.correlate_with_frequency(drop * keep, counts),
                    level, (half + 1).rename("retained"), forgetting.correlate_with_frequency(half * keep, counts))


def _only(included: Sequence[str], classes: Sequence[str]) -> pd.Series:
    """1 for an included class, NaN for the others (correlate_with_frequency leaves NaN out)."""
    return pd.Series([1.0 if c in set(included) else math.nan for c in classes], index=list(classes))


def analyse(per_class: pd.DataFrame, test_labels: pd.DataFrame, counts: pd.Series, classes: Sequence[str],
            raw_dap: pd.Series, threshold: float, sparsity: float,
            method: str = DENSE_REFERENCE.method) -> ChanceCorrected:
    """Retained AP and retained AUROC of every class and their correlations with ln(train
    count); ``raw_dap`` is the paper's dAP at ``sparsity`` per class (correlated over the same
    classes too, so that a difference from ``dap95_rho`` is the correction's, not the selection's)."""
    chance = chance_levels(test_labels, classes)
    rel = forgetting.relative_change(per_class, method, chance)
    auroc = dense_auroc(per_class, test_labels, classes, method)
    excluded = screen(auroc, rel, chance, counts)
    included = [c for c in classes if c not in excluded]
    rel_roc = forgetting.relative_change(per_class, method, pd.Series(AUROC_CHANCE, index=list(classes)), "auroc")
    return ChanceCorrected(chance, auroc,
                           retained(rel, classes, included, counts, threshold, sparsity),
                           retained(rel_roc, classes, included, counts, threshold, sparsity),
                           forgetting.correlate_with_frequency(raw_dap * _only(included, classes), counts),
                           excluded, included)


def summary_keys(cc: ChanceCorrected) -> dict[str, Any]:
    """The chance-corrected keys of ``summary.json``'s ``forgettability`` section (the
    ``excluded_classes`` list is :func:`excluded_classes`'s)."""
    out: dict[str, Any] = {"chance_corrected_test": TEST, "chance_corrected_n_classes": len(cc.included),
                           "dauroc_half_level": cc.roc.half_level if math.isfinite(cc.roc.half_level) else None}
    for name, c in _correlations(cc).items():
        out.update({f"{name}_r": c.r, f"{name}_p": c.p_r, f"{name}_rho": c.rho, f"{name}_rho_p": c.p_rho,
                    f"{name}_n": c.n})
    out["first_drop_chance_corrected_not_reached"] = int(cc.ap.first_drop[cc.included].isna().sum())
    out["first_drop_auroc_not_reached"] = int(cc.roc.first_drop[cc.included].isna().sum())
    return out


def _correlations(cc: ChanceCorrected) -> dict[str, forgetting.Correlation]:
    return {"first_drop_chance_corrected": cc.ap.drop_corr, "dap95_chance_corrected": cc.ap.at_corr,
            "dap95_same_classes": cc.raw_same_classes,
            "first_drop_auroc": cc.roc.drop_corr, "dauroc95": cc.roc.at_corr, "dauroc_half": cc.roc.half_corr}


def excluded_classes(cc: ChanceCorrected, raw: Mapping[str, forgetting.Correlation], counts: pd.Series,
                     threshold: float, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Every class any forgettability correlation left out, once per reason, with the
    statistics it is missing from: ``[{class, reason, statistics}]`` in class order. ``raw``
    maps the paper's statistics (``first_drop``, ``dap95``) to their correlations."""
    reasons: dict[tuple[str, str], list[str]] = {}

    def why(name: str, c: str) -> str:
        if not counts.get(c, 0) > 0:
            return NO_TRAIN
        if name in STATISTICS and c in cc.excluded:
            return cc.excluded[c]
        if name in _CURVES:
            return f"first drop not reached ({_CURVES[name].format(t=threshold, r=1 - threshold)})"
        if name == "dauroc_half":
            return "retained AUROC undefined at the half-life level"
        return "value at 95% sparsity undefined (level not run)"

    for name, corr in {**raw, **_correlations(cc)}.items():
        for c in corr.excluded:
            reasons.setdefault((c, why(name, c)), []).append(name)
    order = {c: i for i, c in enumerate(classes)}
    return [{"class": c, "reason": r, "statistics": s}
            for (c, r), s in sorted(reasons.items(), key=lambda kv: (order.get(kv[0][0], math.inf), kv[0][1]))]
