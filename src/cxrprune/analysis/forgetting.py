"""Forgettability curves: how much of each class's AP a k-sparse model keeps (Analysis 2).

For seed s, class c and sparsity k the relative change is

    rel_dAP(c, k) = (AP_k - AP_0) / (AP_0 + 1e-12)

and the class's forgettability curve is the median of rel_dAP over seeds at every k > 0
(19 points for the paper's levels). Two summaries of each curve are related to the class's
training frequency: the first sparsity where the curve drops strictly below ``-threshold``
(not reached -> missing, never an invented value) and the curve at 95% sparsity.

The same curves can be measured against a chance level ``c`` instead of 0 (``chance`` of
:func:`relative_change`): ``(AP_k - AP_0) / (AP_0 - c)``, the chance-corrected retained AP
minus one (:mod:`cxrprune.analysis.chance_corrected` says why and which ``c``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.errors import DataError

# The reference code's guard against AP_0 = 0 (kept as is so numbers match it).
EPS = 1e-12
# Sparsities are floats written by different stages; they are matched after rounding so
# that 0.15 and 0.15000000000000002 name the same level.
_DECIMALS = 6


def round_levels(values: pd.Series | np.ndarray | Sequence[float]) -> np.ndarray:
    """Sparsity values rounded so that equal levels compare equal across files."""
    return np.round(np.asarray(values, dtype=np.float64), _DECIMALS)


def relative_ap(ap: np.ndarray, ap0: np.ndarray, chance: np.ndarray | float | None = None) -> np.ndarray:
    """The relative change of a level's AP (or another metric) against the dense model's,
    elementwise (broadcasting).

    Without ``chance`` it is the paper's ``(AP_k - AP_0) / (AP_0 + EPS)``. With it, the change
    is measured against the dense model's lift above chance: ``(AP_k - AP_0) / (AP_0 - chance)``
    (= retained - 1, :mod:`cxrprune.analysis.chance_corrected`), NaN where ``AP_0 <= chance``:
    a model no better than chance has nothing to lose, and the ratio would be undefined or
    flip sign. The one formula for the point estimates and the bootstrap resamples alike.
    """
    ap = np.asarray(ap, dtype=np.float64)
    ap0 = np.asarray(ap0, dtype=np.float64)
    if chance is None:
        return (ap - ap0) / (ap0 + EPS)
    lift = ap0 - np.asarray(chance, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = lift > 0  # NaN compares False: undefined
    return np.where(ok, (ap - ap0) / np.where(ok, lift, 1.0), np.nan)


def relative_change(per_class: pd.DataFrame, method: str = DENSE_REFERENCE.method, chance: pd.Series | None = None,
                    metric: str = "ap") -> pd.DataFrame:
    """Per-seed relative AP change of every class at every k > 0.

    ``per_class`` has at least ``seed, method, level, class_name, ap`` (the evaluate
    stage's ``per_class.csv``). Returns ``seed, level, class_name, ap, ap0, rel_dap``.
    A (seed, class) without a k = 0 row cannot be normalised and is a :class:`DataError`.
    ``chance`` (per class name) measures the change against the chance level instead of 0
    (:func:`relative_ap`); a class it lacks is a :class:`DataError`. ``metric`` names another
    per-class column to take the place of ``ap`` (``auroc``, whose chance level is 0.5); the
    returned columns are then named after it (``auroc, auroc0``; the change stays ``rel_dap``).
    """
    missing = {"seed", "method", "level", "class_name", metric} - set(per_class.columns)
    if missing:
        raise DataError(f"per-class table lacks columns {sorted(missing)}; rerun the evaluate stage")
    df = per_class.loc[per_class["method"] == method, ["seed", "level", "class_name", metric]].copy()
    if df.empty:
        raise DataError(f"per-class table has no rows for method {method!r}; rerun the evaluate stage")
    df["level"] = round_levels(df["level"])
    if df.duplicated(["seed", "level", "class_name"]).any():
        raise DataError(f"per-class table has duplicate (seed, level, class) rows for method {method!r}")
    dense = df.loc[df["level"] == 0.0, ["seed", "class_name", metric]].rename(columns={metric: f"{metric}0"})
    out = df.loc[df["level"] > 0.0].merge(dense, on=["seed", "class_name"], how="left",
                                             validate="m:1", indicator=True)
    lacking = out.loc[out["_merge"] == "left_only"]
    if len(lacking):
        first = lacking.iloc[0]
        raise DataError(f"per-class table has no k=0 row for seed {first['seed']}, class {first['class_name']!r}")
    out = out.drop(columns="_merge")
    level = None
    if chance is not None:
        unknown = sorted(set(out["class_name"]) - set(chance.index))
        if unknown:
            raise DataError(f"no chance level for classes {unknown[:3]}")
        level = out["class_name"].map(chance).to_numpy(dtype=np.float64)
    out["rel_dap"] = relative_ap(out[metric].to_numpy(), out[f"{metric}0"].to_numpy(), level)
    return out.sort_values(["seed", "level", "class_name"], kind="stable").reset_index(drop=True)


def forgettability_curves(rel: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Median of ``rel_dap`` over seeds: a DataFrame indexed by level (k > 0), one column per class.

    Columns follow ``classes`` when given (the canonical order), else first appearance.
    A seed whose AP is undefined (NaN, e.g. no test positives) is skipped by the median;
    a class undefined for every seed keeps a NaN curve.
    """
    curves = rel.pivot_table(index="level", columns="class_name", values="rel_dap",
                             aggfunc="median", dropna=False)
    order = list(classes) if classes is not None else list(dict.fromkeys(rel["class_name"]))
    unknown = [c for c in order if c not in curves.columns]
    if unknown:
        raise DataError(f"per-class table has no rows for classes {unknown[:3]}")
    curves = curves[order].sort_index()
    curves.index.name = "level"
    curves.columns.name = "class_name"
    return curves.astype(np.float64)


def first_drop(curves: pd.DataFrame, threshold: float = 0.2) -> pd.Series:
    """Smallest k with ``curve(k) < -threshold`` (strict) per class; NaN where never reached."""
    below = curves.to_numpy() < -threshold  # NaN compares False: an undefined point is no drop
    levels = curves.index.to_numpy(dtype=np.float64)
    hit = below.any(axis=0)
    first = np.where(hit, levels[np.argmax(below, axis=0)], np.nan)
    return pd.Series(first, index=curves.columns, name="first_drop", dtype=np.float64)


def dap_at(curves: pd.DataFrame, sparsity: float = 0.95) -> pd.Series:
    """The curve's value at ``sparsity`` per class (all NaN when that level was not run)."""
    levels = round_levels(curves.index)
    match = np.flatnonzero(levels == round(float(sparsity), _DECIMALS))
    if len(match) == 0:
        return pd.Series(np.nan, index=curves.columns, name="dap", dtype=np.float64)
    return curves.iloc[int(match[0])].rename("dap").astype(np.float64)


def train_counts(labels: pd.DataFrame, classes: Sequence[str]) -> pd.Series:
    """Positives per class in a prepared labels table (column sums)."""
    missing = [c for c in classes if c not in labels.columns]
    if missing:
        raise DataError(f"labels table lacks class columns {missing[:3]}; rerun the prepare stage")
    return labels[list(classes)].sum(axis=0).astype(np.int64).rename("train_count")


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two paired samples; NaN where undefined."""

    r: float
    p_r: float
    rho: float
    p_rho: float
    n: int
    excluded: tuple[str, ...] = field(default=())  # items left out for a missing value


# Fewer points than this give no meaningful correlation (two points always give |r| = 1).
MIN_POINTS = 3


def correlate(x: np.ndarray, y: np.ndarray) -> Correlation:
    """Pearson r and Spearman rho with two-sided p-values over the pairs where both are finite."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(ok.sum())
    if n < MIN_POINTS:
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    with warnings.catch_warnings():
        # A constant sample gives NaN, which is the honest answer; scipy also warns.
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
    return Correlation(float(pr.statistic), float(pr.pvalue), float(sr.statistic), float(sr.pvalue), n)


def correlate_with_frequency(values: pd.Series, counts: pd.Series) -> Correlation:
    """Correlate a per-class value with ln(train count) over classes where both are defined.

    Classes whose value is missing (e.g. first drop not reached) or whose train count is
    zero (ln undefined) are left out and named in ``excluded``; ``n`` is what remains.
    """
    joined = pd.concat([values.rename("value"), counts.rename("count")], axis=1, join="inner")
    with np.errstate(divide="ignore"):
        ln_count = np.log(joined["count"].to_numpy(dtype=np.float64))
    value = joined["value"].to_numpy(dtype=np.float64)
    ok = np.isfinite(value) & np.isfinite(ln_count)
    result = correlate(value[ok], ln_count[ok])
    excluded = tuple(str(c) for c in joined.index[~ok])
    return Correlation(result.r, result.p_r, result.rho, result.p_rho, result.n, excluded)


def long_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Curves as a long table ``level, class_name, rel_dap`` (for ``dvc plots``)."""
    long = curves.stack(future_stack=True).rename("rel_dap").reset_index()
    # Class-major order so each class's line is contiguous in the CSV.
    order = {c: i for i, c in enumerate(curves.columns)}
    long["_o"] = long["class_name"].map(order)
    long = long.sort_values(["_o", "level"], kind="stable").drop(columns="_o")
    return long[["level", "class_name", "rel_dap"]].reset_index(drop=True)
