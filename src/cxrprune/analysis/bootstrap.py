"""Seeded percentile-bootstrap confidence intervals: a two-stage cluster bootstrap over
patients and seeds.

One set of resamples serves every statistic of a run: :func:`cluster_counts` draws ``B``
resamples of the test set's *patients* once (from ``bootstrap.seed``) and turns each into
multiplicities ``w[i, b]`` (how often image ``i`` is in resample ``b``: its patient's draw
count). A statistic of a resample is then a weighted statistic of the original images, so
the AP of every class in every (seed, method, level) block is computed for all ``B``
resamples at once (:func:`weighted_ap`, equal to scikit-learn's AP on the resampled images)
and the same resamples carry on into the mAP, the forgettability curves, the correlations
and the PIE ratios: each interval describes the same draws of the test set.

Why patients, not images: images of one patient share anatomy, acquisition and labels, so
they are not independent draws of the population a claim is about (NIH-CXR-LT: 21,081 test
images of 2,307 patients). Resampling images treats a patient's nine images as nine pieces
of evidence and gives intervals that are too narrow; resampling whole patients (Davison &
Hinkley 1997, sec. 3.8; Field & Welsh 2007) keeps each patient's images together. A table
without patient ids falls back to images, and ``summary.json`` says which unit it used.

Why seeds as well (the second stage): the study's claims are about the *training
procedure*, of which each seed is one draw; with the seeds fixed, an interval speaks for
these five models only. Every resample therefore also draws the seeds with replacement
(whenever there are at least :data:`MIN_SEEDS`) and takes the median over its drawn seeds.
With few seeds the seed stage is coarse (5 seeds give 126 distinct multisets), but leaving
it out states less uncertainty than there is, which is the worse error for a verdict.
"""

from __future__ import annotations

import numpy as np

# Seeds are resampled whenever there is more than one (one imported checkpoint has no seed
# variability to resample; the report then says the intervals cover test patients only).
MIN_SEEDS = 2


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` indices drawn with replacement; the same for the same seed."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n), dtype=np.int64)


def counts(indices: np.ndarray, n: int) -> np.ndarray:
    """Multiplicities of resample indices ``(B, m)``, image-major: ``(n, B)`` float32 (exact
    integers). Image-major because every use gathers and sums whole images (rows)."""
    b = indices.shape[0]
    flat = (indices * b + np.arange(b, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(n, b).astype(np.float32)


def resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicities ``(n, B)`` of ``n_resamples`` seeded resamples of ``n`` items."""
    return counts(resample_indices(n, n_resamples, seed), n)


def cluster_counts(groups: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicities ``(n, B)`` of ``n_resamples`` seeded resamples of the *clusters* in
    ``groups`` (one label per item, e.g. the patient of each image): each resample draws as
    many clusters as there are, with replacement, and every item gets its cluster's count.
    With one item per cluster this is :func:`resample_counts` of the items."""
    codes, n_groups = _codes(groups)
    per_group = resample_counts(n_groups, n_resamples, seed)  # (G, B)
    return per_group[codes]


def _codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster index of every item, numbered in order of first appearance (so the draw does
    not depend on how the ids sort), and the number of clusters."""
    _, first, inverse = np.unique(np.asarray(groups).astype(str), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")  # rank of each unique id by first use
    return order[inverse].astype(np.int64), len(first)


def seed_resamples(n_seeds: int, n_resamples: int, seed: int) -> np.ndarray | None:
    """``(B, n_seeds)`` seed indices drawn with replacement, or None with fewer than
    :data:`MIN_SEEDS` seeds (then every resample keeps all seeds)."""
    if n_seeds < MIN_SEEDS:
        return None
    # A stream of its own, so adding seeds never changes the image resamples.
    return np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))


def weighted_ap(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AP per resample and class: ``(B, C)`` from labels and scores ``(N, C)`` and
    multiplicities ``w`` ``(N, B)`` (:func:`resample_counts`).

    For each class the images are sorted once by score; a positive contributes its
    multiplicity times the precision at its own score, counting its whole group of tied
    scores (as :func:`cxrprune.stats.metrics.average_precision` and scikit-learn do), over
    the positives' total multiplicity. NaN where a resample holds no positive. The sums up
    to each positive's group end are segment sums of whole rows (``np.add.reduceat``), so a
    class costs one pass over ``w`` whatever ``B``.
    """
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores)
    if y.ndim == 1:
        y, scores = y[:, None], scores[:, None]
    c = y.shape[1]
    out = np.full((w.shape[1], c), np.nan)
    for j in range(c):
        order = np.argsort(-scores[:, j], kind="stable")
        s, pos = scores[order, j], y[order, j]
        if not pos.any():
            continue
        # Sorted position of the last image of each positive's tie group.
        ends = np.searchsorted(-s, -s[pos], side="right") - 1
        cuts, which = np.unique(ends, return_inverse=True)
        ws = w[order]
        total = np.cumsum(np.add.reduceat(ws[: cuts[-1] + 1], np.r_[0, cuts[:-1] + 1], axis=0),
                          axis=0, dtype=np.float64)[which]
        wp = ws[pos].astype(np.float64)  # (P, B)
        tp_all = np.cumsum(wp, axis=0)
        # Positives tied with a later positive share that positive's count at the group end.
        tp = tp_all[np.searchsorted(np.flatnonzero(pos), ends, side="right") - 1]
        # A positive absent from a resample (weight 0) may sit where the resample has nothing
        # at or above its score (total 0): it contributes 0, not 0/0.
        prec = np.divide(tp, total, out=np.zeros_like(tp), where=total > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = (wp * prec).sum(axis=0) / wp.sum(axis=0)
    return out


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN resamples (NaN where all are NaN)."""
    alpha = (1 - level) / 2
    samples = np.asarray(samples, dtype=np.float64)
    ok = np.isfinite(samples).any(axis=0)
    lo = np.full(samples.shape[1:], np.nan)
    hi = np.full(samples.shape[1:], np.nan)
    if ok.any():
        kept = samples[:, ok]
        # A ratio's resamples can be infinite (no non-PIE with the flag). Interpolating between
        # two equal infinities gives NaN (inf - inf) with a RuntimeWarning per call; the
        # quantile there is that infinity, which the neighbours on either side agree on.
        with np.errstate(invalid="ignore"):
            q = np.nanquantile(kept, [alpha, 1 - alpha], axis=0)
        below = np.nanquantile(kept, [alpha, 1 - alpha], axis=0, method="lower")
        above = np.nanquantile(kept, [alpha, 1 - alpha], axis=0, method="higher")
        same_inf = np.isnan(q) & np.isinf(below) & (below == above)
        q[same_inf] = below[same_inf]
        lo[ok], hi[ok] = q[0], q[1]
    return lo, hi


def interval(samples: np.ndarray, level: float = 0.95) -> list[float | None]:
    """``[lo, hi]`` of a scalar statistic's resamples, JSON-ready (None where undefined)."""
    lo, hi = percentile_ci(np.asarray(samples, dtype=np.float64).reshape(-1, 1), level)
    return [None if not np.isfinite(lo[0]) else float(lo[0]), None if not np.isfinite(hi[0]) else float(hi[0])]
