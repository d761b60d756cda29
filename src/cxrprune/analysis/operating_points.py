"""Operating points: for each compression method, the largest level that is safe on average
and the largest that is safe for every disease.

Every comparison is against the dense model: ``l1`` at level 0 of the same seed.

(a) **mAP not significantly lower**: the evaluate stage's one-sided paired test across seeds
    of ``mAP(method, k) < mAP(dense)``, Holm across the method's levels
    (``evaluate.json`` -> ``methods.<method>.paired_tests``;
    :func:`cxrprune.analysis.evaluate.paired_tests_by_method`).
(b) **no class loses more than the tolerance**: for method ``m``, level ``k`` and class ``c``
    each seed ``s`` gives ``r_s = (AP_s(m, k, c) - AP_s(dense, c)) / (AP_s(dense, c) + 1e-12)``
    (the forgettability curves' relative change). The class *loses* at ``(m, k)`` when the
    one-sided paired test across seeds of ``r_s < -tolerance`` (H0: ``r >= -tolerance``)
    rejects at ``alpha`` after Holm's correction across the classes of that ``(m, k)``.
    The test, correction and alpha are the evaluate stage's (``evaluate.test``: ``ttest`` is
    :func:`scipy.stats.ttest_rel` of ``r`` against ``-tolerance``, i.e. a one-sample t-test
    of ``r + tolerance < 0``; ``wilcoxon`` the signed-rank test of ``r + tolerance``), and
    ``tolerance`` is ``analyze.class_tolerance`` (default 0.05: 5% of the class's AP).

Scanning a method's levels upwards, ``max_safe_level_map`` is the largest level before the
first level failing (a); ``max_safe_level_all_classes`` the largest before the first level
failing (a) or (b): the operating point. A level that is the dense model itself (any pruning
method at 0) is not tested and is safe. ``null`` means not even the method's lowest level is
safe (e.g. ``int8`` with a significant loss), or fewer than two seeds. ``gap =
max_safe_level_map - max_safe_level_all_classes``: how much of the "safe on average" level a
method gives up so that no disease is forgotten, the headline number per method.

A significance rule answers "is there evidence of a loss": with few seeds a small loss can go
undetected, which :func:`power_note` says when the test cannot reject at all.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrprune.analysis.evaluate import (
    REFERENCE,
    holm,
    max_safe_level,
    min_attainable_p,
    one_sided_test,
)
from cxrprune.analysis.forgetting import EPS
from cxrprune.core.atomic import json_clean
from cxrprune.core.errors import DataError

LEVEL_DECIMALS = 6  # levels are floats written by other stages; matched after rounding
CLASS_TEST_COLUMNS = ["method", "level", "class_name", "n_seeds", "median_rel_dap", "statistic", "p_raw", "p_adj",
                      "loses"]
POINT_KEYS = ["max_safe_level_map", "max_safe_level_all_classes", "gap", "n_classes_losing_at_map_point",
              "classes_losing_at_map_point", "measured_at", "map", "worst_class_rel_dap", "nonzero_params", "bytes",
              "latency_ms_b1", "images_per_s_b64"]


def relative_to_dense(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per seed, (method, level) and class: ``rel_dap = (AP - AP_dense) / (AP_dense + EPS)``
    against the dense model of the same seed (``l1`` at 0): the forgettability curves'
    definition with one reference for every method. The reference block itself is left out.
    Returns ``seed, method, level, class_name, ap, ap0, rel_dap``."""
    need = {"seed", "method", "sparsity", "class_name", "ap"}
    if need - set(per_class.columns):
        raise DataError(f"per-class table lacks columns {sorted(need - set(per_class.columns))}; "
                        "rerun `dvc repro evaluate`")
    df = per_class[["seed", "method", "sparsity", "class_name", "ap"]].rename(columns={"sparsity": "level"})
    df = df.assign(level=np.round(df["level"].to_numpy(np.float64), LEVEL_DECIMALS), method=df["method"].astype(str))
    is_ref = (df["method"] == REFERENCE[0]) & (df["level"] == REFERENCE[1])
    dense = df.loc[is_ref, ["seed", "class_name", "ap"]].rename(columns={"ap": "ap0"})
    if dense.empty:
        raise DataError(f"per-class table has no rows for the dense model ({REFERENCE[0]}@0); "
                        "rerun `dvc repro evaluate`")
    if dense.duplicated(["seed", "class_name"]).any():
        raise DataError("per-class table has duplicate dense (seed, class) rows; rerun `dvc repro evaluate`")
    out = df.loc[~is_ref].merge(dense, on=["seed", "class_name"], how="left", validate="m:1")
    if out["ap0"].isna().any():
        row = out[out["ap0"].isna()].iloc[0]
        raise DataError(f"per-class table has no dense row for seed {row['seed']}, class {row['class_name']!r}; "
                        "rerun `dvc repro evaluate`")
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
                            "rerun `dvc repro evaluate`")
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


def operating_points(methods: Mapping[str, Mapping[str, Any]], class_tests: pd.DataFrame,
                     pareto: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per method, the keys :data:`POINT_KEYS`: the two levels of the module docstring, their
    gap, the classes that lose at the level that is safe on average, and the operating
    point's median mAP, worst-class relative change, size and speed (from ``pareto``,
    :func:`cxrprune.analysis.efficiency.pareto_table`; null when not measured). Those are read
    at ``measured_at``: the operating point, or the method's lowest level when none is safe.

    ``methods`` is ``evaluate.json``'s ``methods`` entry (levels and paired tests)."""
    out: dict[str, dict[str, Any]] = {}
    tested = set(class_tests["method"]) if len(class_tests) else set()
    for method, entry in methods.items():
        levels = [round(float(k), LEVEL_DECIMALS) for k in entry["levels"]]
        n_seeds = int(entry["n_seeds"])
        map_unsafe = {round(float(row["sparsity"]), LEVEL_DECIMALS): bool(row["significant"])
                      for row in entry["paired_tests"]}
        ct = class_tests[class_tests["method"] == method] if method in tested else class_tests.iloc[0:0]
        ct_levels = {round(float(k), LEVEL_DECIMALS) for k in ct["level"]}
        untested = [k for k in levels if k not in ct_levels and not (method == REFERENCE[0] and k == REFERENCE[1])]
        if untested:
            raise DataError(f"per-class table has no rows for {method}@{untested[0]:g}, which evaluate.json lists; "
                            "rerun `dvc repro evaluate`")
        losing = {k: sorted(ct.loc[np.isclose(ct["level"], k) & ct["loses"], "class_name"]) for k in levels}
        if n_seeds < 2:
            safe_map = safe_all = None
        else:
            safe_map = max_safe_level(levels, [map_unsafe.get(k, False) for k in levels])
            safe_all = max_safe_level(levels, [map_unsafe.get(k, False) or bool(losing[k]) for k in levels])
        at_map = losing.get(safe_map, []) if safe_map is not None else None
        point: dict[str, Any] = {
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


def rule(tolerance: float, evaluation: Mapping[str, Any], n_classes: int) -> dict[str, Any]:
    """``summary.json``'s ``operating_point_rule``: what (b) used, and the power note."""
    test, correction, alpha = evaluation["test"], evaluation["correction"], float(evaluation["alpha"])
    n_seeds = int(evaluation["n_seeds"])
    return {"class_tolerance": tolerance, "test": test, "correction": correction, "alpha": alpha,
            "n_seeds": n_seeds, "reference": f"{REFERENCE[0]}@{REFERENCE[1]:g}",
            "note": power_note(test, n_seeds, n_classes, alpha, correction)}


def markdown_table(points: Mapping[str, Mapping[str, Any]], rule_: Mapping[str, Any]) -> str:
    """The README's operating-point table, rendered from ``summary.json`` (never typed)."""
    def show(x: Any, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    lines = [
        f"Operating points against the dense model ({rule_['reference']}), {rule_['n_seeds']} seeds, "
        f"one-sided paired {rule_['test']}, {rule_['correction']} correction, alpha {rule_['alpha']:g}, "
        f"class tolerance {rule_['class_tolerance']:g} (relative AP):",
        "",
        "| method | safe on average (mAP) | safe for every class | gap | classes losing at the mAP-safe level "
        "| measured at | mAP | worst class rel. AP change | bytes | latency b1 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, p in points.items():
        losing = p["classes_losing_at_map_point"]
        names = "n/a" if losing is None else (", ".join(losing) if losing else "none")
        at = p["measured_at"]
        where = "n/a" if at is None else (f"{at:g}" if at == p["max_safe_level_all_classes"] else f"{at:g} (not safe)")
        lines.append(f"| {method} | {show(p['max_safe_level_map'], 'g')} | {show(p['max_safe_level_all_classes'], 'g')} "
                     f"| {show(p['gap'], '.2f')} | {names} | {where} | {show(p['map'], '.3f')} "
                     f"| {show(p['worst_class_rel_dap'], '+.3f')} | {show(p['bytes'], ',.0f')} "
                     f"| {show(p['latency_ms_b1'], '.2f')} |")
    if rule_.get("note"):
        lines += ["", f"Note: {rule_['note']}"]
    return "\n".join(lines) + "\n"
