"""The outcome of each treatment on the untouched test set, and the paired comparisons.

Per treatment and seed: per-class AP/AUROC/F1 at every L1 level
(:func:`cxrprune.analysis.evaluate.per_class_metrics`), dense mAP, the mean AP of the rare
classes (the quarter of classes with the fewest training positives, at least one class),
and the whole pruning analysis: forgettability curves (median over seeds,
:mod:`cxrprune.analysis.forgetting`), the mean relative AP change at the highest level
(95% by default) and the first 20%-drop level, and the test-set PIEs of the treatment's
seed ensemble with their overlap with the baseline's. Paired comparisons across seeds
(a seed's treated model against the same seed's baseline or random-control model) give the
mean difference, its 95% t confidence interval and the two-sided paired t-test p-value
(:func:`scipy.stats.ttest_rel`); with fewer than 2 seeds they are null.

Each comparison also states its minimum detectable effect (``mde``): the true mean
difference that this test, at ``ALPHA`` with these seeds and the observed SD of the paired
differences (``sd_diff``), would find with probability ``POWER``
(:func:`cxrprune.stats.power.t_test_mde`, exact noncentral t). Why: with 3 seeds "no
significant difference" is the expected result even for a real effect several times the
seed-to-seed noise; the MDE says how large an effect the study could have seen, so a
non-significant comparison is not read as "no effect".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.analysis import forgetting
from cxrprune.analysis.evaluate import per_class_metrics
from cxrprune.analysis.pies import rowwise_spearman, select_pies
from cxrprune.stats.power import t_test_mde

METHOD = "l1"
ALPHA = 0.05  # two-sided level of the paired t-tests (the CIs are 1 - ALPHA)
POWER = 0.8  # the power at which each comparison's minimum detectable effect is stated
# What each compared quantity is, for the MDE statement.
QUANTITIES = {"map": "dense mAP", "rare_ap": "rare-class AP", "dap_top": "mean relative AP change at the top level"}


def rare_classes(train_counts: pd.Series) -> list[str]:
    """The quarter of classes with the fewest training positives (at least one class)."""
    n = max(1, len(train_counts) // 4)
    return list(train_counts.sort_values(kind="stable").index[:n])


def per_class_table(tables: Mapping[tuple[str, int], pd.DataFrame], labels: pd.DataFrame, classes: list[str],
                    f1_threshold: float) -> pd.DataFrame:
    """``treatment, seed, level, class_name, ap, auroc, f1`` of every treated model (L1 levels)."""
    parts = []
    for (treatment, seed), table in tables.items():
        pc = per_class_metrics(table, labels, classes, seed, f1_threshold, source=f"{treatment} seed {seed}")
        parts.append(pc.loc[pc["method"] == METHOD].drop(columns="method").assign(treatment=treatment))
    out = pd.concat(parts, ignore_index=True)
    return out[["treatment", "seed", "level", "class_name", "ap", "auroc", "f1"]]


def paired(a: pd.Series, b: pd.Series) -> dict[str, float | int | None]:
    """a - b over the seeds both have: mean, 1 - ALPHA t CI, two-sided paired t-test p, the
    SD of the differences and the minimum detectable effect at ALPHA and POWER (see the
    module docstring); all but ``n`` and ``mean_diff`` null with fewer than 2 seeds."""
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = (joined["a"] - joined["b"]).to_numpy(dtype=np.float64)
    n = len(d)
    out: dict[str, float | int | None] = {"n": n, "mean_diff": float(d.mean()) if n else None,
                                          "ci_low": None, "ci_high": None, "p": None, "sd_diff": None, "mde": None}
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
        out["ci_low"], out["ci_high"] = float(d.mean()) - half, float(d.mean()) + half
        out["sd_diff"] = sd
        out["mde"] = t_test_mde(sd, n, alpha=ALPHA, power=POWER, two_sided=True)
        if sd == 0:
            out["p"] = 1.0 if d.mean() == 0 else 0.0
        else:
            out["p"] = float(stats.ttest_rel(joined["a"], joined["b"]).pvalue)
    return out


@dataclass
class TreatmentOutcome:
    by_seed: pd.DataFrame  # index seed: map, rare_ap, dap_top
    per_class_dense: pd.DataFrame  # index seed, columns classes: dense AP
    summary: dict
    curves: pd.DataFrame
    test_pies: np.ndarray  # boolean over test images


def treatment_outcome(pc: pd.DataFrame, rare: Sequence[str], classes: list[str], drop_threshold: float,
                      dense: Sequence[pd.DataFrame], pruned: Sequence[pd.DataFrame], pie_fraction: float,
                      train_set: Mapping[int, dict]) -> TreatmentOutcome:
    """One treatment's per-seed numbers and its summary (see the module docstring)."""
    dense_pc = pc.loc[forgetting.round_levels(pc["level"]) == 0.0]
    ap0 = dense_pc.pivot(index="seed", columns="class_name", values="ap")[classes]
    rel = forgetting.relative_change(pc.assign(method=METHOD), METHOD)
    top = float(rel["level"].max())
    dap_top = rel.loc[forgetting.round_levels(rel["level"]) == round(top, 6)].groupby("seed")["rel_dap"].mean()
    by_seed = pd.DataFrame({"map": ap0.mean(axis=1), "rare_ap": ap0[list(rare)].mean(axis=1), "dap_top": dap_top})
    curves = forgetting.forgettability_curves(rel, classes)
    first = forgetting.first_drop(curves, drop_threshold)
    probs_d = np.mean([d[classes].to_numpy(np.float64) for d in dense], axis=0)
    probs_p = np.mean([p[classes].to_numpy(np.float64) for p in pruned], axis=0)
    test_pies = select_pies(rowwise_spearman(probs_d, probs_p), pie_fraction)
    sets = list(train_set.values())
    summary = {
        "seeds": len(by_seed),
        "n_train": int(np.median([s["n_train"] for s in sets])),
        "n_dropped": int(np.median([s["n_dropped"] for s in sets])),
        "map_dense": float(by_seed["map"].median()),
        "rare_ap_dense": float(by_seed["rare_ap"].median()),
        "dap_top": float(forgetting.dap_at(curves, top).mean()),
        "first_drop_median": _median_or_none(first),
        "first_drop_reached": int(first.notna().sum()),
        "test_pie_count": int(test_pies.sum()),
    }
    return TreatmentOutcome(by_seed, ap0, summary, curves, test_pies)


def _median_or_none(values: pd.Series) -> float | None:
    v = values.dropna()
    return float(v.median()) if len(v) else None


def overlap(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Jaccard index of two PIE sets and the fraction of ``b`` (the baseline's) found again in ``a``."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = int((a | b).sum())
    return {"jaccard": int((a & b).sum()) / union if union else None,
            "baseline_kept": int((a & b).sum()) / int(b.sum()) if b.any() else None}


def comparisons(outcomes: Mapping[str, TreatmentOutcome], reference: str) -> dict[str, dict]:
    """Every other treatment against ``reference``: paired mAP, rare-class AP and dAP at the
    top level, and ``detectable``, the sentence stating their minimum detectable effects."""
    ref = outcomes[reference].by_seed
    out = {}
    for t, o in outcomes.items():
        if t != reference:
            res = {key: paired(o.by_seed[key], ref[key]) for key in QUANTITIES}
            out[t] = {**res, "detectable": detectable(res)}
    return out


def detectable(results: Mapping[str, Mapping]) -> str:
    """One sentence from :func:`paired` results keyed like ``QUANTITIES``: with N seeds, a
    difference smaller than each one's MDE could rarely be detected."""
    n = max(int(r["n"]) for r in results.values())
    parts = [f"{r['mde']:.3f} in {QUANTITIES[k]}" + (f" ({r['n']} seeds)" if r["n"] != n else "")
             for k, r in results.items() if r["mde"] is not None]
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if not parts:
        return f"With {seeds}, no difference could be detected: a paired t-test needs at least 2 seeds."
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    return (f"With {seeds}, a difference smaller than {listed} could rarely be detected (the two-sided paired "
            f"t-test at alpha {ALPHA:g} finds it less than {POWER:.0%} of the time, given the seeds' observed "
            f"spread).")


def class_changes(outcomes: Mapping[str, TreatmentOutcome], counts: pd.Series, reference: str = "baseline"
                  ) -> pd.DataFrame:
    """Per treatment and class: dense AP minus the reference's, paired over seeds, with its
    95% CI; classes ordered by training frequency, most frequent first."""
    rows = []
    ref = outcomes[reference].per_class_dense
    order = list(counts.sort_values(ascending=False, kind="stable").index)
    for t, o in outcomes.items():
        if t == reference:
            continue
        for c in order:
            r = paired(o.per_class_dense[c], ref[c])
            rows.append({"treatment": t, "class_name": c, "train_count": int(counts[c]), "ap_change": r["mean_diff"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p"]})
    return pd.DataFrame(rows, columns=["treatment", "class_name", "train_count", "ap_change", "ci_low", "ci_high", "p"])
