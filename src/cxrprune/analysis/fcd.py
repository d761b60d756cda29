"""Forgettability curve dissimilarity (FCD) of class pairs (Analysis 3).

FCD(A, B) is the Euclidean distance between the two forgettability curves (the reference
code; the poster says MSE, offered as ``mse``). It is related, over every unordered pair,
to the difference in log frequency and to the fourth root of the pair's IoU, both taken
from the TEST labels. The reference code weights by labels: with M = Y^T Y,

    f_A = sum_B M[B, A]                 (positives of A, each weighted by its label count)
    IoU(A, B) = M[A, B] / (f_A + f_B - M[A, B])

``plain`` uses the number of positives and the standard image-level IoU instead.

Significance (:func:`fcd_correlations`): the statistics are Spearman's rho and Pearson's r
over the pairs, but the pairs are not independent observations. 20 classes give 190 pairs
and each class sits in 19 of them, so one class with an unusual curve or frequency moves a
whole row of pairs, and the textbook p-value of a correlation over 190 "observations" is far
too small. The p-values therefore come from Mantel tests (:mod:`cxrprune.stats.mantel`) that
permute the class labels of the FCD matrix, keeping that row structure in the null. The
partial Mantel test of FCD vs |d ln f| given IoU^(1/4) asks whether the frequency relation
survives co-occurrence, which is itself related to frequency.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from cxrprune.analysis.forgetting import Correlation, correlate
from cxrprune.core.errors import CxrpruneError, DataError
from cxrprune.stats.mantel import mantel, pairs_to_matrix, partial_mantel

Distance = Literal["euclidean", "mse"]
Weighting = Literal["label", "plain"]


def curve_distance(a: np.ndarray, b: np.ndarray, distance: Distance = "euclidean") -> float:
    """Distance between two curves sampled at the same sparsities."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if distance == "euclidean":
        return float(np.sqrt(np.sum(diff ** 2)))
    if distance == "mse":
        return float(np.mean(diff ** 2))
    raise ValueError(f"unknown FCD distance {distance!r}")


def label_statistics(y: np.ndarray, weighting: Weighting = "label") -> tuple[np.ndarray, np.ndarray]:
    """Per-class frequency ``f`` (C,) and pairwise IoU (C, C) of a 0/1 label matrix (N, C).

    ``label``: the reference code's label-weighted definitions from M = Y^T Y;
    ``plain``: f = positives per class, IoU = |A and B| / |A or B| over images.
    An IoU whose denominator is 0 (both classes absent) is NaN.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.ndim != 2:
        raise DataError(f"label matrix must be 2-D (images x classes), got shape {y.shape}")
    m = (y.T @ y).astype(np.float64)  # exact in int64, then float for the divisions
    if weighting == "label":
        f = m.sum(axis=0)
    elif weighting == "plain":
        f = np.diag(m).copy()
    else:
        raise ValueError(f"unknown FCD weighting {weighting!r}")
    denom = f[:, None] + f[None, :] - m
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(denom > 0, m / np.where(denom > 0, denom, 1.0), np.nan)
    return f, iou


def fcd_pairs(curves: pd.DataFrame, test_labels: pd.DataFrame | np.ndarray,
              classes: Sequence[str] | None = None, distance: Distance = "euclidean",
              weighting: Weighting = "label") -> pd.DataFrame:
    """One row per unordered class pair: ``class_a, class_b, fcd, abs_dlnf, iou, iou_quarter``.

    ``curves`` is the forgettability-curve table (sparsity x class); ``test_labels`` holds one
    0/1 column per class (a DataFrame with at least those columns, or an (N, C) array in the
    order of ``classes``). Pairs follow the class order (A before B). ``abs_dlnf`` is NaN
    when a class has frequency 0 (ln undefined).
    """
    classes = list(classes) if classes is not None else list(curves.columns)
    missing = [c for c in classes if c not in curves.columns]
    if missing:
        raise DataError(f"forgettability curves lack classes {missing[:3]}")
    if isinstance(test_labels, pd.DataFrame):
        absent = [c for c in classes if c not in test_labels.columns]
        if absent:
            raise DataError(f"test labels lack class columns {absent[:3]}; rerun the prepare stage")
        y = test_labels[classes].to_numpy()
    else:
        y = np.asarray(test_labels)
        if y.ndim != 2 or y.shape[1] != len(classes):
            raise DataError(f"test label matrix has shape {y.shape}, expected (N, {len(classes)})")
    f, iou = label_statistics(y, weighting)
    with np.errstate(divide="ignore"):
        ln_f = np.where(f > 0, np.log(np.where(f > 0, f, 1.0)), np.nan)
    values = curves[classes].to_numpy(dtype=np.float64)
    ia, ib = np.triu_indices(len(classes), k=1)
    rows = pd.DataFrame({
        "class_a": [classes[i] for i in ia],
        "class_b": [classes[j] for j in ib],
        "fcd": [curve_distance(values[:, i], values[:, j], distance) for i, j in zip(ia, ib)],
        "abs_dlnf": np.abs(ln_f[ia] - ln_f[ib]),
        "iou": iou[ia, ib],
    })
    rows["iou_quarter"] = rows["iou"] ** 0.25
    return rows


def curve_noise(rel: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.Series:
    """Each class's curve noise: the standard deviation over seeds of its per-seed change
    (``rel_dap``, :func:`cxrprune.analysis.forgetting.relative_change`) at each level, averaged
    over the levels (NaN with fewer than 2 seeds). A curve is the median over seeds, so this is
    the scale of the scatter behind it: two noisy curves sit apart by noise alone."""
    sd = rel.pivot_table(index="level", columns="class_name", values="rel_dap", aggfunc="std", dropna=False)
    order = list(classes) if classes is not None else list(sd.columns)
    return sd.reindex(columns=order).mean(axis=0, skipna=True).rename("curve_noise").astype(np.float64)


def noise_rho(pairs: pd.DataFrame, noise: pd.Series) -> float:
    """Spearman's rho over the pairs of FCD with the pair's summed curve noise (:func:`curve_noise`);
    NaN when undefined. Descriptive, no p-value: how far the distances measure seed-to-seed
    scatter rather than curve shape. A retained curve divides by the dense model's lift above
    chance, so a weakly learned class's curve is noisy, and in the synthetic calibration those are
    mostly the rare classes: pairs of them (small frequency gaps) sit apart by noise alone, which
    hides an FCD-frequency relation (``benchmarks/fcd_noise.py``, README: Calibration)."""
    summed = noise.reindex(pairs["class_a"]).to_numpy() + noise.reindex(pairs["class_b"]).to_numpy()
    fcd = pairs["fcd"].to_numpy(dtype=np.float64)
    ok = np.isfinite(summed) & np.isfinite(fcd)
    if ok.sum() < 3 or np.ptp(summed[ok]) == 0 or np.ptp(fcd[ok]) == 0:
        return float("nan")
    return float(spearmanr(fcd[ok], summed[ok]).statistic)


MANTEL_PERMUTATIONS = 9999
"""Class-label permutations per Mantel test. Not a study parameter: it only sets the Monte
Carlo error of the p-value, whose standard error near p = 0.05 is sqrt(0.05 * 0.95 / 10000)
~ 0.002 (the smallest p it can give is 1e-4). With n! <= 9999 (up to 7 classes) every
permutation is enumerated instead and the p-value is exact."""
MANTEL_SEED = 0  # the same inputs give the same p-values
PAIR_VALUES = ("fcd", "abs_dlnf", "iou_quarter")


@dataclass(frozen=True)
class FcdTests:
    """FCD vs frequency gap (``freq``) and vs co-occurrence (``iou``) over the pairs of
    ``classes``: r and rho over the pairs, their p-values (``p_r``, ``p_rho``) from Mantel
    tests, and the partial Spearman rho of FCD and |d ln f| given IoU^(1/4) with its partial
    Mantel p-value. ``excluded``: classes left out because a value of their pairs is undefined."""

    freq: Correlation
    iou: Correlation
    freq_given_iou_rho: float
    freq_given_iou_p: float
    classes: tuple[str, ...]
    excluded: tuple[str, ...]
    permutations: int  # evaluated per test: n! when exact
    exact: bool

    @property
    def p_method(self) -> str:
        """How the p-values were obtained, for summary.json."""
        if self.permutations == 0:
            return "mantel, not run (fewer than 3 classes with defined pairs, or a constant value)"
        if self.exact:
            return f"mantel, all {self.permutations} class permutations (exact)"
        return f"mantel, {self.permutations} class permutations (seed {MANTEL_SEED})"


def testable_classes(pairs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(kept, excluded) classes: a Mantel test needs every pair of the kept classes defined.

    A class whose frequency is 0 (ln undefined) or whose curve is undefined makes all its
    pairs undefined; it is dropped with all its pairs, the class with the most undefined
    pairs first (the earlier class on a tie), until none is left among the kept classes.
    """
    classes = list(dict.fromkeys(itertools.chain(pairs["class_a"], pairs["class_b"])))
    undefined = ~np.isfinite(pairs[list(PAIR_VALUES)].to_numpy(dtype=np.float64)).all(axis=1)
    a, b = pairs["class_a"].to_numpy(), pairs["class_b"].to_numpy()
    kept, excluded = set(classes), []
    while True:
        live = undefined & np.isin(a, list(kept)) & np.isin(b, list(kept))
        if not live.any():
            break
        counts = pd.Series(np.concatenate([a[live], b[live]])).value_counts()
        worst = max(classes, key=lambda c: (counts.get(c, 0), -classes.index(c)))
        kept.discard(worst)
        excluded.append(worst)
    return [c for c in classes if c in kept], [c for c in classes if c not in kept]


def fcd_correlations(pairs: pd.DataFrame) -> FcdTests:
    """Correlation of FCD with |d ln f| and with IoU^(1/4), Mantel p-values (module docstring).

    Both relations use the pairs of the same classes (:func:`testable_classes`), so that the
    partial test can relate all three matrices. A statistic that is undefined (fewer than 3
    classes, a constant triangle) has NaN p-values.
    """
    kept, excluded = testable_classes(pairs)
    used = pairs.loc[pairs["class_a"].isin(kept) & pairs["class_b"].isin(kept)]
    fcd = used["fcd"].to_numpy(dtype=np.float64)
    nan = float("nan")
    tests: dict[str, Correlation] = {}
    permutations, exact = 0, False
    matrices = {col: pairs_to_matrix(used, "class_a", "class_b", col, kept) for col in PAIR_VALUES} \
        if len(kept) >= 3 else {}
    for key, col in (("freq", "abs_dlnf"), ("iou", "iou_quarter")):
        c = correlate(fcd, used[col].to_numpy(dtype=np.float64))
        p = {}
        for method, stat in (("pearson", c.r), ("spearman", c.rho)):
            if not matrices or not np.isfinite(stat):  # no Mantel test of an undefined correlation
                p[method] = nan
                continue
            res = mantel(matrices["fcd"], matrices[col], method=method, permutations=MANTEL_PERMUTATIONS,
                         seed=MANTEL_SEED)
            p[method], permutations, exact = res.p, res.permutations, res.exact
        tests[key] = Correlation(c.r, p["pearson"], c.rho, p["spearman"], c.n, tuple(excluded))
    partial_rho, partial_p = nan, nan
    if matrices and np.isfinite(tests["freq"].rho) and np.isfinite(tests["iou"].rho):
        try:
            res = partial_mantel(matrices["fcd"], matrices["abs_dlnf"], matrices["iou_quarter"], method="spearman",
                                 permutations=MANTEL_PERMUTATIONS, seed=MANTEL_SEED)
            partial_rho, partial_p = res.r, res.p
        except CxrpruneError:
            pass  # |d ln f| or FCD a perfect monotone function of IoU^(1/4): no partial correlation exists
    return FcdTests(tests["freq"], tests["iou"], partial_rho, partial_p, tuple(kept), tuple(excluded),
                    permutations, exact)
