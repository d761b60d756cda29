"""Are flagged images (PIEs) over-represented among the positives of rare classes?

Per class c with ``n_c`` test positives, ``k_c`` of them flagged and overall flag rate ``q``,
the enrichment is the smoothed log ratio of observed to expected flagged positives,

    e_c = log((k_c + 0.5) / (n_c q + 0.5)),

finite for every class with a positive, including those with no flagged positive. The 0.5
is the Haldane-Anscombe continuity correction (Anscombe 1956): it shrinks the ratio of a
class with few expected flags towards 0 instead of giving -inf (k_c = 0) or a huge value
(k_c = 1 of 0.1 expected). The statistic is Spearman's rho between ``e_c`` and the log of
each class's frequency over ALL classes with a test positive (a class without one is listed
as excluded, never dropped silently); rare-class enrichment shows as rho < 0.

The old statistic, ``log(k_c / (n_c q))`` over the classes with ``k_c > 0`` only, selects a
rare class exactly when chance flagged one of its few positives, and then its ratio
``>= 1 / (n_c q)`` is large: random flags alone give a negative rho, and scipy's p-value
treats that artefact as evidence. Here the p-value comes from permuting the flags across
images, so the same selection and smoothing act on every null draw. The null is "flags are
independent of the label matrix"; the permutation conditions on the number of flagged
images (and, with ``clusters``, on how the flags fall within patients).

Smoothing does not make rho centred at 0 under the null (log of a small count is biased
differently at different expected counts: with 38 flags in 1500 images and prevalences
0.3 to 0.003 random flags give a mean rho near +0.12). The permutation p-value accounts for
that; the result reports the null mean beside rho, and the two-sided p-value doubles the
smaller tail (:func:`~cxrprune.stats.permutation.doubled_tail_p`) rather than comparing |rho|.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from cxrprune.stats import checks
from cxrprune.stats.permutation import ALTERNATIVES, count_extreme, doubled_tail_p, monte_carlo_p
from cxrprune.stats.results import plain

SMOOTHING = 0.5
MIN_CLASSES = 3  # Spearman's rho over two classes is always +-1
NO_POSITIVE = "no test positive"
NO_FREQUENCY = "frequency is 0 (log undefined)"
_BATCH_VALUES = 1 << 21  # permuted flag values per batch (16 MiB as float64)


@dataclass(frozen=True)
class ClassEnrichment:
    """One class: its counts, its smoothed log enrichment and whether it is in the test."""

    index: int
    name: str
    positives: int
    flagged: int
    expected: float  # n_c q
    enrichment: float  # NaN when the class has no test positive
    frequency: float
    included: bool
    reason: str | None  # why it is excluded; None when included


@dataclass(frozen=True)
class EnrichmentResult:
    """The test over ``n_classes`` classes (``n_excluded`` more listed in ``per_class``)."""

    rho: float
    p: float
    null_mean_rho: float  # rho expected from random flags: read ``rho`` against this, not 0
    n_classes: int
    n_excluded: int
    permutations: int
    alternative: str
    n_images: int
    n_flagged: int
    flag_rate: float
    clustered: bool
    per_class: tuple[ClassEnrichment, ...]

    def per_class_table(self) -> dict[str, list]:
        """Column lists of ``per_class`` (``pandas.DataFrame(result.per_class_table())``)."""
        cols = [f for f in ClassEnrichment.__dataclass_fields__]
        return {c: [getattr(row, c) for row in self.per_class] for c in cols}

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def smoothed_log_enrichment(flagged: Any, positives: Any, flag_rate: float) -> np.ndarray:
    """``log((k + 0.5) / (n q + 0.5))`` elementwise: see the module docstring for why."""
    k = np.asarray(flagged, dtype=np.float64)
    expected = np.asarray(positives, dtype=np.float64) * flag_rate
    return np.log((k + SMOOTHING) / (expected + SMOOTHING))


def class_enrichment(flags: Any, labels: Any, frequency: Any, *, permutations: int = 9999, seed: int = 0,
                     clusters: Any = None, alternative: str = "two-sided",
                     classes: Sequence[str] | None = None) -> EnrichmentResult:
    """Spearman rho of per-class enrichment of ``flags`` vs log ``frequency``, permutation p-value.

    ``flags`` (n_images,) bool, ``labels`` (n_images, n_classes) 0/1, ``frequency``
    (n_classes,) e.g. training positives. ``alternative`` ``less`` asks only whether rare
    classes are enriched (rho below its null distribution), the study's directional
    question. ``clusters`` (n_images,) e.g. patient ids: flag patterns are then permuted
    between clusters of the same size and shuffled within each cluster, keeping how flags
    cluster within patients; without it each image is its own cluster.
    """
    alternative = checks.choice(alternative, "alternative", ALTERNATIVES)
    permutations = checks.count(permutations, "permutations")
    rng = np.random.default_rng(checks.seed(seed))
    f = _flags(flags)
    y = _labels(labels, f.size)
    freq = checks.finite(checks.float_array(frequency, "frequency", 1), "frequency")
    if freq.size != y.shape[1]:
        checks.fail("frequency", f"has {freq.size} entries but labels has {y.shape[1]} classes")
    if (freq < 0).any():
        checks.fail("frequency", f"must be >= 0, got {checks.shown(freq[freq < 0][0])}")
    names = _names(classes, y.shape[1])
    strata = _strata(clusters, f.size)

    positives = y.sum(axis=0)
    q = f.mean()
    flagged = f.astype(np.float64) @ y
    reasons = np.where(positives == 0, NO_POSITIVE, np.where(freq == 0, NO_FREQUENCY, ""))
    keep = reasons == ""
    if keep.sum() < MIN_CLASSES:
        checks.fail("labels", f"only {int(keep.sum())} class(es) have a test positive and a frequency > 0; "
                              f"the test needs at least {MIN_CLASSES}")
    log_freq = np.log(freq[keep])
    if np.ptp(log_freq) == 0:
        checks.fail("frequency", "is the same for every class in the test; the correlation is undefined")
    enrichment = np.where(positives > 0, smoothed_log_enrichment(flagged, positives, q), np.nan)

    yk = y[:, keep]
    expected = positives[keep] * q
    freq_scores = _standardise(sps.rankdata(log_freq))
    rho = float(_rowwise_spearman(enrichment[keep][None, :], freq_scores)[0])
    null = np.empty(permutations)
    batch = max(1, _BATCH_VALUES // f.size)
    for start in range(0, permutations, batch):
        b = min(batch, permutations - start)
        null_e = np.log((_null_counts(f, yk, strata, rng, b) + SMOOTHING) / (expected + SMOOTHING))
        null[start:start + b] = _rowwise_spearman(null_e, freq_scores)
    if not np.isfinite(rho):
        p = float("nan")
    elif alternative == "two-sided":
        p = doubled_tail_p(rho, null, permutations)
    else:
        p = monte_carlo_p(count_extreme(rho, null, alternative), permutations)

    per_class = tuple(
        ClassEnrichment(i, names[i], int(positives[i]), int(round(flagged[i])), float(positives[i] * q),
                        float(enrichment[i]), float(freq[i]), bool(keep[i]), str(reasons[i]) or None)
        for i in range(y.shape[1]))
    return EnrichmentResult(rho, p, float(np.nanmean(null)) if np.isfinite(null).any() else float("nan"),
                            int(keep.sum()), int((~keep).sum()), permutations, alternative,
                            int(f.size), int(f.sum()), float(q), clusters is not None, per_class)


def _flags(flags: Any) -> np.ndarray:
    f = np.asarray(flags)
    if f.ndim != 1:
        checks.fail("flags", f"must be 1-D (one per image), got shape {f.shape}")
    if f.dtype != bool:
        if not np.isin(f, (0, 1)).all():
            checks.fail("flags", "must be boolean (or 0/1)")
        f = f.astype(bool)
    if not f.any() or f.all():
        checks.fail("flags", f"needs flagged and unflagged images, got {int(f.sum())} of {f.size} flagged")
    return f


def _labels(labels: Any, n_images: int) -> np.ndarray:
    y = checks.float_array(labels, "labels", 2)
    if y.shape[0] != n_images:
        checks.fail("labels", f"has {y.shape[0]} rows but flags has {n_images} images")
    if not np.isin(y, (0.0, 1.0)).all():
        checks.fail("labels", "must be 0/1 (a NaN or soft label is not a positive)")
    return y


def _names(classes: Sequence[str] | None, n: int) -> list[str]:
    if classes is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in classes]
    if len(names) != n:
        checks.fail("classes", f"has {len(names)} names but labels has {n} classes")
    return names


def _strata(clusters: Any, n: int) -> list[np.ndarray]:
    """Image indices as one (clusters, size) array per cluster size."""
    if clusters is None:
        return [np.arange(n)[:, None]]
    c = np.asarray(clusters)
    if c.shape != (n,):
        checks.fail("clusters", f"must have one id per image, shape ({n},), got {c.shape}")
    try:
        _, inverse, sizes = np.unique(c, return_inverse=True, return_counts=True)
    except TypeError:
        checks.fail("clusters", "ids must be comparable (all strings or all numbers, no None)")
    grouped = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return [grouped[starts[sizes == s][:, None] + np.arange(s)] for s in np.unique(sizes)]


def _null_counts(flags: np.ndarray, labels: np.ndarray, strata: list[np.ndarray], rng: np.random.Generator,
                 b: int) -> np.ndarray:
    """(b, n_classes) flagged positives per class for ``b`` permutations of the flags.

    Singleton clusters: a permutation of the flags is a uniform random subset of the same
    size, so only that subset (or its complement, whichever is smaller) is drawn. Larger
    clusters: the clusters' flag patterns are permuted between clusters of the same size
    and then shuffled among each cluster's images.
    """
    k = np.zeros((b, labels.shape[1]))
    for members in strata:
        c, s = members.shape
        fa = flags[members]
        n_flag = int(fa.sum())
        if n_flag == 0:
            continue
        if s == 1:
            ym = labels[members[:, 0]]
            m = min(n_flag, c - n_flag)
            idx = np.stack([rng.choice(c, m, replace=False, shuffle=False) for _ in range(b)])
            part = ym[idx].sum(axis=1)
            k += part if m == n_flag else ym.sum(axis=0) - part
            continue
        rows = rng.permuted(np.broadcast_to(np.arange(c), (b, c)), axis=1)
        moved = rng.permuted(fa[rows], axis=2).astype(np.float64)
        k += np.einsum("bcs,csk->bk", moved, labels[members])
    return k


def _standardise(v: np.ndarray) -> np.ndarray:
    v = v - v.mean()
    return v / np.sqrt(v @ v)


def _rowwise_spearman(values: np.ndarray, ref_scores: np.ndarray) -> np.ndarray:
    """Spearman rho of each row of ``values`` with the standardised ranks ``ref_scores``;
    NaN for a row whose values are all equal."""
    r = sps.rankdata(values, axis=1)
    r -= r.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", r, r))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, (r @ ref_scores) / norm, np.nan)
