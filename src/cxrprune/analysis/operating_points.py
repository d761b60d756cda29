"""Operating points: for each compression method, the largest level at which every disease
is *shown* to keep its AP, and beside it the paper-style levels that are merely not
significantly worse.

Every comparison is against the dense model: ``l1`` at level 0 of the same seed. For method
``m``, level ``k`` and class ``c`` each seed ``s`` gives ``r_s = (AP_s(m, k, c) - AP_s(dense, c))
/ (AP_s(dense, c) + 1e-12)`` (the forgettability curves' relative change,
:func:`relative_to_dense`).

**The operating point: non-inferiority for every class** (:func:`class_noninferiority`).
Class ``c`` is shown non-inferior at ``(m, k)`` when the one-sided t test of ``r + tolerance``
rejects ``H0: mean(r) <= -tolerance`` at ``alpha`` (:mod:`cxrprune.stats.noninferiority`),
``tolerance`` being ``analyze.class_tolerance`` (5% of the class's AP) and ``alpha`` the
evaluate stage's. A level is acceptable when *every* class is shown there: an
intersection-union test (Berger 1982). Its null, "some class loses the tolerance or more", is
the union of the class nulls and is rejected only when every class null is, so each class is
tested at full alpha and no correction across classes is needed (Holm would only take power:
a correction protects against *any* false rejection, this rule needs *all* of them). The
levels are tested in fixed sequence from the lowest up, stopping at the first level that is
not acceptable; the family-wise error stays at alpha without paying for the number of
levels. ``operating_point`` is the largest level before that first failure
(``first_level_not_shown``). For every level the classes not shown are named, and per class
the MDE (the smallest margin these seeds would show with 80% power for a lossless class) at
the operating point and at the first level not shown: a class whose MDE exceeds the
tolerance could not have been shown there, whatever its true loss. A level whose change is
exactly 0 at every seed is the dense model itself and passes untested
(:func:`cxrprune.analysis.evaluate.noninferior_sequence`). A class whose change is undefined in
some seed (dense AP 0, or not finite) is left out of the intersection and listed with the
reason in ``operating_point_rule``; with fewer than 3 seeds nothing is measured.

Why not the paper's significance rule below: it calls a class safe when a loss beyond the
tolerance is *not significant*, so noise passes (a rare class with a median change of -63%
and p 0.55 passes); here noise can only fail to show a class safe.

**Paper-style, kept for comparison** (:func:`class_loss_tests`, keys ``max_safe_level_map``,
``max_safe_level_all_classes``, ``gap``, ``classes_losing_at_map_point``):

(a) **mAP not significantly lower**: the evaluate stage's one-sided paired test across seeds
    of ``mAP(method, k) < mAP(dense)``, Holm across the method's levels
    (``evaluate.json`` -> ``methods.<method>.paired_tests``;
    :func:`cxrprune.analysis.evaluate.paired_tests_by_method`).
(b) **no class loses significantly more than the tolerance**: the class *loses* at ``(m, k)``
    when the one-sided paired test across seeds of ``r_s < -tolerance`` (H0: ``r >=
    -tolerance``) rejects at ``alpha`` after Holm's correction across the classes of that
    ``(m, k)``. The test, correction and alpha are the evaluate stage's (``evaluate.test``:
    ``ttest`` is :func:`scipy.stats.ttest_rel` of ``r`` against ``-tolerance``, i.e. a
    one-sample t-test of ``r + tolerance < 0``; ``wilcoxon`` the signed-rank test of ``r +
    tolerance``).

Scanning a method's levels upwards, ``max_safe_level_map`` is the largest level before the
first level failing (a); ``max_safe_level_all_classes`` the largest before the first level
failing (a) or (b). The costs (``measured_at``, ``map``, ``bytes``, ...) are still read at
``max_safe_level_all_classes``. A level that is the dense model itself (any pruning method
at 0) is not tested and is safe. ``null`` means not even the method's lowest level is safe
(e.g. ``int8`` with a significant loss), or fewer than two seeds. ``gap =
max_safe_level_map - max_safe_level_all_classes``. With few seeds a small loss can go
undetected, which :func:`power_note` says when the test cannot reject at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrprune.analysis.evaluate import (
    IDENTICAL,
    MIN_NI_SEEDS,
    holm,
    max_safe_level,
    min_attainable_p,
    noninferior_sequence,
    one_sided_test,
)
from cxrprune.analysis.forgetting import EPS
from cxrprune.core.atomic import json_clean
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer

LEVEL_DECIMALS = 6  # levels are floats written by other stages; matched after rounding
CLASS_TEST_COLUMNS = ["method", "level", "class_name", "n_seeds", "median_rel_dap", "statistic", "p_raw", "p_adj",
                      "loses"]
# Non-inferiority columns of the per-class table (class_loss_tests.csv), beside the paper-style test's.
CLASS_NI_COLUMNS = ["mean_rel_dap", "ni_lower_bound", "ni_p", "noninferior", "ni_tested", "ni_mde", "ni_reason"]
CLASS_TABLE_COLUMNS = [*CLASS_TEST_COLUMNS, *CLASS_NI_COLUMNS]
NI_POINT_KEYS = ["operating_point", "first_level_not_shown", "classes_not_shown", "class_mde_at_operating_point",
                 "class_mde_at_first_not_shown", "max_noninferior_level_map"]
POINT_KEYS = [*NI_POINT_KEYS,
              "max_safe_level_map", "max_safe_level_all_classes", "gap", "n_classes_losing_at_map_point",
              "classes_losing_at_map_point", "measured_at", "map", "worst_class_rel_dap", "nonzero_params", "bytes",
              "latency_ms_b1", "images_per_s_b64"]


def relative_to_dense(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per seed, (method, level) and class: ``rel_dap = (AP - AP_dense) / (AP_dense + EPS)``
    against the dense model of the same seed (``l1`` at 0): the forgettability curves'
    definition with one reference for every method. The reference block itself is left out.
    Returns ``seed, method, level, class_name, ap, ap0, rel_dap``."""
    need = {"seed", "method", "level", "class_name", "ap"}
    if need - set(per_class.columns):
        raise DataError(f"per-class table lacks columns {sorted(need - set(per_class.columns))}; "
                        f"rerun `dvc repro {producer('per_class')}`")
    df = per_class[["seed", "method", "level", "class_name", "ap"]]
    df = df.assign(level=np.round(df["level"].to_numpy(np.float64), LEVEL_DECIMALS), method=df["method"].astype(str))
    is_ref = (df["method"] == DENSE_REFERENCE.method) & (df["level"] == DENSE_REFERENCE.level)
    dense = df.loc[is_ref, ["seed", "class_name", "ap"]].rename(columns={"ap": "ap0"})
    if dense.empty:
        raise DataError(f"per-class table has no rows for the dense model ({DENSE_REFERENCE.method}@0); "
                        f"rerun `dvc repro {producer('per_class')}`")
    if dense.duplicated(["seed", "class_name"]).any():
        raise DataError("per-class table has duplicate dense (seed, class) rows; "
                        f"rerun `dvc repro {producer('per_class')}`")
    out = df.loc[~is_ref].merge(dense, on=["seed", "class_name"], how="left", validate="m:1")
    if out["ap0"].isna().any():
        row = out[out["ap0"].isna()].iloc[0]
        raise DataError(f"per-class table has no dense row for seed {row['seed']}, class {row['class_name']!r}; "
                        f"rerun `dvc repro {producer('per_class')}`")
    out["rel_dap"] = (out["ap"] - out["ap0"]) / (out["ap0"] + EPS)
    return out.sort_values(["method", "level", "seed", "class_name"], kind="stable").reset_index(drop=True)


def class_loss_tests(rel: pd.DataFrame, tolerance: float, test: str = "ttest", correction: str = "holm",
                     alpha: float = 0.05) -> pd.DataFrame:
    """Rule (b) of the module docstring for every (method, level) of ``rel``
    (:func:`relative_to_dense`): one row per class with the number of seeds, the median
    relative change, scipy's statistic, the raw and Holm-adjusted p-values and ``loses``
    (``p_adj <= alpha``). A block equal to the dense model at every seed and class is the
    dense model itself: p = 1, not tested. With fewer than two seeds p is NaN and nothing
    loses (no paired test is possible)."""
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"test must be 'wilcoxon' or 'ttest', got {test!r}")
    if correction not in ("holm", "none"):
        raise ValueError(f"correction must be 'holm' or 'none', got {correction!r}")
    rows = []
    for (method, level), block in rel.groupby(["method", "level"], sort=True):
        wide = block.pivot(index="seed", columns="class_name", values="rel_dap")
        if wide.isna().any().any():
            raise DataError(f"per-class table: {method}@{level:g} lacks a class for some seed; "
                            f"rerun `dvc repro {producer('per_class')}`")
        classes = list(wide.columns)
        r = wide.to_numpy(np.float64)
        n = r.shape[0]
        if n < 2:
            stat = p_raw = p_adj = np.full(len(classes), math.nan)
        elif not r.any():
            stat, p_raw, p_adj = np.zeros(len(classes)), np.ones(len(classes)), np.ones(len(classes))
        else:
            tested = [one_sided_test(r[:, j], np.full(n, -tolerance), test) for j in range(len(classes))]
            stat = np.array([t for t, _ in tested])
            p_raw = np.array([p for _, p in tested])
            p_adj = holm(p_raw) if correction == "holm" else p_raw
        rows.append(pd.DataFrame({
            "method": method, "level": float(level), "class_name": classes, "n_seeds": n,
            "median_rel_dap": np.median(r, axis=0), "statistic": stat, "p_raw": p_raw, "p_adj": p_adj,
            "loses": np.nan_to_num(p_adj, nan=1.0) <= alpha,
        }))
    if not rows:
        return pd.DataFrame({c: [] for c in CLASS_TEST_COLUMNS})
    return pd.concat(rows, ignore_index=True)[CLASS_TEST_COLUMNS]


@dataclass(frozen=True)
class ClassNoninferiority:
    """Outcome of :func:`class_noninferiority`.

    ``table``: per (method, level, class) of ``rel``: ``method, level, class_name`` and
    :data:`CLASS_NI_COLUMNS` (``noninferior``: shown, which needs ``ni_tested``, the level
    reached by the method's sequence). ``points``: per method the non-inferiority keys of
    :data:`NI_POINT_KEYS` (all but ``max_noninferior_level_map``, which is evaluate's).
    ``left_out``: ``[{"class", "reason"}]``. ``note``: why nothing was measured, else None."""

    table: pd.DataFrame
    points: dict[str, dict[str, Any]]
    left_out: list[dict[str, str]]
    note: str | None


def class_noninferiority(rel: pd.DataFrame, tolerance: float, alpha: float = 0.05) -> ClassNoninferiority:
    """The operating point of every method of ``rel`` (:func:`relative_to_dense`) by the
    module docstring's intersection-union test in fixed sequence, margin ``tolerance``."""
    left_out = _left_out(rel)
    excluded = {c["class"]: c["reason"] for c in left_out}
    frames, points, notes = [], {}, []
    for method, block in rel.groupby("method", sort=True):
        by_class = {}
        for cls, rows in block[~block["class_name"].isin(excluded)].groupby("class_name", sort=True):
            wide = rows.pivot(index="seed", columns="level", values="rel_dap")
            if wide.isna().any().any():
                raise DataError(f"per-class table: class {cls!r} of {method} lacks a level for some seed; "
                                f"rerun `dvc repro {producer('per_class')}`")
            diffs = {float(k): wide[k].to_numpy(np.float64) for k in wide.columns}
            if method == DENSE_REFERENCE.method:
                # the dense model: in the sequence, untested
                diffs.setdefault(DENSE_REFERENCE.level, np.zeros(len(wide)))
            by_class[str(cls)] = noninferior_sequence(diffs, tolerance, alpha)
        points[str(method)], method_rows = _method_point(str(method), by_class, alpha)
        notes += [f"non-inferiority not measured: {seq.reason}" for seq in by_class.values() if not seq.measured]
        if not by_class:
            notes.append("non-inferiority not measured: every class is left out (classes_left_out says why)")
        for cls, reason in excluded.items():  # listed in the table too, never silently dropped
            mean = block[block["class_name"] == cls].groupby("level", sort=True)["rel_dap"].mean()
            method_rows.append(pd.DataFrame({
                "method": method, "level": mean.index.to_numpy(np.float64), "class_name": cls,
                "mean_rel_dap": mean.to_numpy(), "ni_lower_bound": math.nan, "ni_p": math.nan, "noninferior": False,
                "ni_tested": False, "ni_mde": math.nan, "ni_reason": f"left out: {reason}"}))
        frames += method_rows
    columns = ["method", "level", "class_name", *CLASS_NI_COLUMNS]
    table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame({c: [] for c in columns})
    return ClassNoninferiority(table, points, left_out, notes[0] if notes else None)


def class_table(loss_tests: pd.DataFrame, ni: ClassNoninferiority) -> pd.DataFrame:
    """``class_loss_tests.csv``: the paper-style test (:func:`class_loss_tests`) and the
    non-inferiority columns side by side, one row per (method, level, class)."""
    keys = ["method", "level", "class_name"]
    ni_table = ni.table.assign(level=np.round(ni.table["level"].to_numpy(np.float64), LEVEL_DECIMALS))
    out = loss_tests.assign(level=np.round(loss_tests["level"].to_numpy(np.float64), LEVEL_DECIMALS))
    return out.merge(ni_table, on=keys, how="left", validate="1:1")[CLASS_TABLE_COLUMNS]


def _left_out(rel: pd.DataFrame) -> list[dict[str, str]]:
    """Classes whose relative change is undefined in some seed: dense AP not above 0 (the
    ratio divides by it) or a change that is not a finite number."""
    bad_dense = ~(rel["ap0"] > 0) if "ap0" in rel else pd.Series(False, index=rel.index)
    bad_change = ~np.isfinite(rel["rel_dap"].to_numpy(np.float64))
    out = []
    for cls in sorted(rel.loc[bad_dense | bad_change, "class_name"].unique()):
        seeds = sorted({int(s) for s in rel.loc[bad_dense & (rel["class_name"] == cls), "seed"]})
        if seeds:
            reason = f"dense AP is not above 0 at seed(s) {seeds}, so its relative change is undefined"
        else:
            first = rel[bad_change & (rel["class_name"] == cls)].iloc[0]
            reason = (f"relative AP change is not a finite number (first at seed {first['seed']}, "
                      f"{first['method']}@{first['level']:g})")
        out.append({"class": str(cls), "reason": reason})
    return out


def _method_point(method: str, by_class: Mapping[str, Any], alpha: float) -> tuple[dict[str, Any], list]:
    """One method's operating point from its classes' sequences (the same levels each): the
    level sequence fails first where any class's does, and a level is reached when no lower
    level failed for any class. Returns the point's keys and its per-class table rows."""
    seqs = list(by_class.values())
    measured = bool(seqs) and all(s.measured for s in seqs)
    failures = [s.first_failed for s in seqs if s.first_failed is not None]
    first = min(failures) if measured and failures else None
    levels = sorted({float(k) for s in seqs for k in s.table["level"]})
    point: dict[str, Any] = {
        "operating_point": (max_safe_level(levels, [first is not None and k >= first for k in levels])
                            if measured else None),
        "first_level_not_shown": first,
    }
    rows, not_shown = [], {k: [] for k in levels}
    for cls, seq in by_class.items():
        t = seq.table
        reached = measured & ((first is None) | (t["level"] <= first)).to_numpy()
        # A class is not shown at a level when its own test does not show it (past the first failure
        # too, for information); identical levels are the dense model.
        shown = (t["p"].to_numpy() <= alpha) | (t["reason"] == IDENTICAL).to_numpy()
        for k, ok in zip(t["level"], shown):
            if not ok:
                not_shown[float(k)].append(cls)
        rows.append(pd.DataFrame({
            "method": method, "level": t["level"], "class_name": cls, "mean_rel_dap": t["mean_rel_change"],
            "ni_lower_bound": t["lower_bound"], "ni_p": t["p"], "noninferior": t["noninferior"] & reached,
            "ni_tested": reached, "ni_mde": t["mde"], "ni_reason": t["reason"]}))
    table = [r[~((r["method"] == DENSE_REFERENCE.method) & (r["level"] == DENSE_REFERENCE.level))] for r in rows]
    point["classes_not_shown"] = None if not measured else [
        {"level": k, "tested": first is None or k <= first, "classes": sorted(not_shown[k])}
        for k in levels if not (method == DENSE_REFERENCE.method and k == DENSE_REFERENCE.level)]
    point["class_mde_at_operating_point"] = _mde_at(by_class, point["operating_point"])
    point["class_mde_at_first_not_shown"] = _mde_at(by_class, first)
    return point, table


def _mde_at(by_class: Mapping[str, Any], level: float | None) -> list[dict[str, Any]] | None:
    """Per class the MDE at ``level`` (null for a class identical to the dense model there:
    no test); None for no level."""
    if level is None:
        return None
    out = []
    for cls, seq in by_class.items():
        row = seq.table[seq.table["level"] == level]
        out.append({"class": cls, "mde": json_clean(float(row["mde"].iloc[0])) if len(row) else None})
    return out


def operating_points(methods: Mapping[str, Mapping[str, Any]], class_tests: pd.DataFrame,
                     pareto: pd.DataFrame, ni: ClassNoninferiority | None = None) -> dict[str, dict[str, Any]]:
    """Per method, the keys :data:`POINT_KEYS`. Non-inferiority (from ``ni``,
    :func:`class_noninferiority`; null without it): ``operating_point``,
    ``first_level_not_shown``, ``classes_not_shown`` (``[{"level", "tested", "classes"}]``),
    ``class_mde_at_operating_point`` and ``class_mde_at_first_not_shown`` (``[{"class",
    "mde"}]``), and ``max_noninferior_level_map``, evaluate's mAP non-inferiority at
    ``evaluate.margin``. Paper-style: the two levels of the module docstring, their gap, the
    classes that lose at the level that is safe on average, and the median mAP, worst-class
    relative change, size and speed (from ``pareto``,
    :func:`cxrprune.analysis.cost_accuracy.pareto_table`; null when not measured) read at
    ``measured_at``: ``max_safe_level_all_classes``, or the method's lowest level when none is safe.

    ``methods`` is ``evaluate.json``'s ``methods`` entry (levels and paired tests)."""
    out: dict[str, dict[str, Any]] = {}
    ni_points = ni.points if ni is not None else {}
    tested = set(class_tests["method"]) if len(class_tests) else set()
    for method, entry in methods.items():
        levels = [round(float(k), LEVEL_DECIMALS) for k in entry["levels"]]
        n_seeds = int(entry["n_seeds"])
        # evaluate.json's paired-test records keep the key "sparsity" (a metrics key, not a table column)
        map_unsafe = {round(float(row["sparsity"]), LEVEL_DECIMALS): bool(row["significant"])
                      for row in entry["paired_tests"]}
        ct = class_tests[class_tests["method"] == method] if method in tested else class_tests.iloc[0:0]
        ct_levels = {round(float(k), LEVEL_DECIMALS) for k in ct["level"]}
        untested = [k for k in levels if k not in ct_levels and (method, k) != DENSE_REFERENCE]
        if untested:
            raise DataError(f"per-class table has no rows for {method}@{untested[0]:g}, which evaluate.json lists; "
                            f"rerun `dvc repro {producer('per_class')}`")
        losing = {k: sorted(ct.loc[np.isclose(ct["level"], k) & ct["loses"], "class_name"]) for k in levels}
        if n_seeds < 2:
            safe_map = safe_all = None
        else:
            safe_map = max_safe_level(levels, [map_unsafe.get(k, False) for k in levels])
            safe_all = max_safe_level(levels, [map_unsafe.get(k, False) or bool(losing[k]) for k in levels])
        at_map = losing.get(safe_map, []) if safe_map is not None else None
        point: dict[str, Any] = {
            **{k: ni_points.get(method, {}).get(k) for k in NI_POINT_KEYS},
            "max_noninferior_level_map": entry.get("max_noninferior_level"),
            "max_safe_level_map": safe_map,
            "max_safe_level_all_classes": safe_all,
            "gap": (safe_map - safe_all) if safe_map is not None and safe_all is not None else None,
            "n_classes_losing_at_map_point": None if at_map is None else len(at_map),
            "classes_losing_at_map_point": at_map,
        }
        # What the method costs and scores at its operating point; when no level is safe, at its
        # lowest level (int8's only one), so the table still says what was measured and found unsafe.
        measured_at = safe_all if safe_all is not None else (min(levels) if levels and n_seeds >= 2 else None)
        point["measured_at"] = measured_at
        hit = pareto[(pareto["method"] == method) & np.isclose(pareto["level"], measured_at if measured_at is not None
                                                               else math.nan)]
        for key in ("map", "worst_class_rel_dap", "nonzero_params", "bytes", "latency_ms_b1", "images_per_s_b64"):
            point[key] = float(hit[key].iloc[0]) if len(hit) else None
        out[method] = {k: json_clean(point[k]) for k in POINT_KEYS}
    return out


def power_note(test: str, n_seeds: int, n_classes: int, alpha: float, correction: str) -> str | None:
    """Say so when rule (b) cannot reject for any class (Wilcoxon with few seeds), which makes
    every class "safe" by construction rather than by evidence."""
    min_p = min_attainable_p(test, n_seeds)
    if n_seeds < 2:
        return f"only {n_seeds} seed: no per-class paired test is possible, so operating points are null"
    threshold = alpha / n_classes if correction == "holm" else alpha
    if min_p is None or min_p <= threshold:
        return None
    return (f"with {n_seeds} seeds the smallest one-sided {test} p-value is {min_p:.4g} > {threshold:.4g} "
            f"({'Holm over ' + str(n_classes) + ' classes' if correction == 'holm' else 'alpha'}): no class can be "
            f"found to lose, so max_safe_level_all_classes equals max_safe_level_map by construction; "
            f"use evaluate.test=ttest or more seeds")


def rule(tolerance: float, evaluation: Mapping[str, Any], n_classes: int,
         ni: ClassNoninferiority | None = None) -> dict[str, Any]:
    """``summary.json``'s ``operating_point_rule``: what (b) used and its power note and, with
    ``ni``, the non-inferiority rule under ``noninferiority``: margin (the tolerance), alpha,
    the smallest number of seeds, ``classes_left_out`` (``[{"class", "reason"}]``) and ``note``."""
    test, correction, alpha = evaluation["test"], evaluation["correction"], float(evaluation["alpha"])
    n_seeds = int(evaluation["n_seeds"])
    out: dict[str, Any] = {"class_tolerance": tolerance, "test": test, "correction": correction, "alpha": alpha,
                           "n_seeds": n_seeds, "reference": f"{DENSE_REFERENCE.method}@{DENSE_REFERENCE.level:g}",
                           "note": power_note(test, n_seeds, n_classes, alpha, correction)}
    if ni is not None:
        out["noninferiority"] = {
            "margin": tolerance, "alpha": alpha, "min_seeds": MIN_NI_SEEDS,
            "test": "one-sided t test of the relative AP change + margin per class at full alpha "
                    "(intersection-union over classes), levels in fixed sequence from the lowest",
            "classes_left_out": ni.left_out, "note": ni.note}
    return out


def markdown_table(points: Mapping[str, Mapping[str, Any]], rule_: Mapping[str, Any]) -> str:
    """The README's operating-point table, rendered from ``summary.json`` (never typed)."""
    def show(x: Any, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    # A summary.json from before non-inferiority renders as it always did (the README check
    # compares the committed block with the committed outputs).
    ni = rule_.get("noninferiority")
    intro = (f"Operating points against the dense model ({rule_['reference']}), {rule_['n_seeds']} seeds, "
             f"one-sided paired {rule_['test']}, {rule_['correction']} correction, alpha {rule_['alpha']:g}, "
             f"class tolerance {rule_['class_tolerance']:g} (relative AP):")
    head = ["safe on average (mAP)", "safe for every class", "gap", "classes losing at the mAP-safe level",
            "measured at", "mAP", "worst class rel. AP change", "bytes", "latency b1 (ms)"]
    if ni is not None:
        intro = (f"Operating point: the largest level at which every class is shown to lose less than "
                 f"{ni['margin']:g} of its AP (non-inferiority, one-sided t, alpha {ni['alpha']:g} per class, "
                 f"levels in fixed sequence), then the first level not shown and its classes. Beside them the "
                 f"paper-style levels that are not significantly worse. " + intro)
        head = ["operating point (every class shown)", "first level not shown: classes", *head]
    lines = [intro, "", "| method | " + " | ".join(head) + " |", "|" + " --- |" * (len(head) + 1)]
    for method, p in points.items():
        losing = p["classes_losing_at_map_point"]
        names = "n/a" if losing is None else (", ".join(losing) if losing else "none")
        at = p["measured_at"]
        where = "n/a" if at is None else (f"{at:g}" if at == p["max_safe_level_all_classes"] else f"{at:g} (not safe)")
        cells = [show(p["max_safe_level_map"], "g"), show(p["max_safe_level_all_classes"], "g"), show(p["gap"], ".2f"),
                 names, where, show(p["map"], ".3f"), show(p["worst_class_rel_dap"], "+.3f"), show(p["bytes"], ",.0f"),
                 show(p["latency_ms_b1"], ".2f")]
        if ni is not None:
            cells = [show(p.get("operating_point"), "g"), _first_not_shown(p), *cells]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    notes = [rule_.get("note")]
    if ni is not None:
        notes.append(ni.get("note"))
        notes += [f"{c['class']} left out: {c['reason']}." for c in ni.get("classes_left_out") or []]
        notes += [_unshowable(method, p, float(ni["margin"])) for method, p in points.items()]
    lines += [x for note in notes if note for x in ("", f"Note: {note}")]
    return "\n".join(lines) + "\n"


def _first_not_shown(point: Mapping[str, Any]) -> str:
    """``0.3: Hernia, Fibrosis``; ``none`` when every level was shown; n/a when not measured."""
    first, by_level = point.get("first_level_not_shown"), point.get("classes_not_shown")
    if by_level is None:
        return "n/a"
    if first is None:
        return "none"
    classes = next((r["classes"] for r in by_level if r["level"] == first), [])
    return f"{first:g}: {', '.join(classes)}"


def _unshowable(method: str, point: Mapping[str, Any], margin: float) -> str | None:
    """The classes that could not have been shown at the first level not shown: MDE > margin."""
    mde = point.get("class_mde_at_first_not_shown") or []
    weak = [r["class"] for r in mde if r["mde"] is not None and r["mde"] > margin]
    if not weak:
        return None
    return (f"{method} at {point['first_level_not_shown']:g}: {len(weak)} of {len(mde)} classes could not have "
            f"been shown with these seeds even without a loss (MDE > {margin:g}): {', '.join(weak)}")
