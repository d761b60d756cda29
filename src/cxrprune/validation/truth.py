"""The value each finding's 95% interval should cover, per replicate.

The bootstrap intervals (:mod:`cxrprune.analysis.uncertainty`) resample test patients and
seeds, so their target is the statistic freed of the sampling noise of images and networks.
Here that target is computed for each replicate from the model that drew it
(:mod:`.generator`), holding fixed what a study fixes -- the test set's labels, label flips,
qualities and the planted part of each image's fragility, the train counts and the classes'
forgetting points -- and averaging over the rest: each image's appearance, the random part of
its fragility and the networks' noise.

- the safe level (finding 1): each class's AP at every level is the *population* AP of its
  score distribution, integrated numerically: given the true label a column score is normal
  (:func:`~.generator.signal`, :func:`~.generator.column_sd`) at the seeds' central forgetting
  point (the median over seeds of a monotone function of a seed's offset is the function at
  the median offset); once collapsed the row perturbation adds a scale that mixes over the
  images' fragilities (``FRAGILITY_DRAWS`` draws per image, ``FRAGILITY_BINS`` quantile bins).
  The safe level is the largest level whose population mAP loses less than
  ``evaluate.margin`` there and below. Findings 2-5 read chance-corrected AUROC statistics
  without a bootstrap interval, so they have no coverage to measure.
- PIE ratios (findings 7-9): each image's probability of being a PIE over ``PIE_DRAWS``
  redraws of its fragility and of the collapsed networks, by the analysis's own ensemble,
  row-wise Spearman and selection; the target is the ratio (difference) of the PIE-weighted
  and non-PIE-weighted means: the statistic with the selection noise averaged out.

What the intervals leave out counts against their coverage, as it should: AP's finite-sample
bias (the rare classes have ~8 test positives, and a chance-level AP from 8 positives is well
above the prevalence). The PIE selection noise is in the intervals: each resample redraws the
PIE set from its resampled seeds (:func:`cxrprune.analysis.pies.selection_resamples`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, ndtr

from cxrprune.analysis import evaluate, pies
from cxrprune.core.config import AnalyzeConfig
from cxrprune.validation.generator import (
    Design,
    Replicate,
    collapsed,
    column_sd,
    draw_fragility,
    level_logits,
    signal,
)

GRID = 2000  # score thresholds of the numerical AP integral
FRAGILITY_BINS = 40  # quantile bins of the fragility mixture at collapsed levels
FRAGILITY_DRAWS = 8  # fragility draws per image for that mixture
PIE_DRAWS = 20  # redraws of the collapsed networks per replicate
_SPAN = 8.0  # the grid covers every component's mean +- 8 SD


def population_ap(prevalence: float, positive_weights: np.ndarray, negative_weights: np.ndarray,
                  means: np.ndarray, sds: np.ndarray) -> float:
    """AP of a score whose positives and negatives are mixtures of the normal components
    ``(means, sds)`` with the given weights (each summing to 1), at ``prevalence``: the
    integral of precision over recall, on a grid of thresholds from high to low."""
    grid = np.linspace((means + _SPAN * sds).max(), (means - _SPAN * sds).min(), GRID)
    tail = ndtr((means[None, :] - grid[:, None]) / sds[None, :])  # (G, J): P(score > threshold)
    recall, false_rate = tail @ positive_weights, tail @ negative_weights
    kept = prevalence * recall + (1.0 - prevalence) * false_rate
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(kept > 0, prevalence * recall / np.where(kept > 0, kept, 1.0), 0.0)
    return float(np.sum(precision * np.diff(recall, prepend=0.0)))


def population_ap_table(rep: Replicate, design: Design, pie_sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Population AP (level x class) of every class at every level (module docstring).

    Before the collapse a column score given the true label is one normal, so each class
    mixes two components by its observed positives' and negatives' true labels. Collapsed,
    the row perturbation adds a scale drawn per image (:func:`~.generator.draw_fragility`,
    ``FRAGILITY_DRAWS`` draws per image around its planted part), binned by quantile."""
    y = rep.test_labels[rep.classes].to_numpy(dtype=bool)
    t = rep.true_labels.astype(bool)
    scales = np.stack([draw_fragility(design, rep.planted, rng) for _ in range(FRAGILITY_DRAWS)], axis=1)  # (N, D)
    edges = np.quantile(scales, np.linspace(0, 1, FRAGILITY_BINS + 1)[1:-1])
    bins = np.searchsorted(edges, scales)
    bin_scale = np.sqrt(np.bincount(bins.ravel(), (scales ** 2).ravel(), FRAGILITY_BINS)
                        / np.maximum(np.bincount(bins.ravel(), minlength=FRAGILITY_BINS), 1))
    ap = np.empty((len(rep.levels), len(rep.classes)))
    for c in range(len(rep.classes)):
        prevalence = float(y[:, c].mean())
        true_pos = np.array([1.0 - t[y[:, c], c].mean(), t[y[:, c], c].mean()])  # true-label shares
        true_neg = np.array([1.0 - t[~y[:, c], c].mean(), t[~y[:, c], c].mean()])
        group = (t[:, c].astype(np.int64) * FRAGILITY_BINS)[:, None] + bins  # (N, D): (true label, bin)
        size = 2 * FRAGILITY_BINS
        bin_pos = np.bincount(group[y[:, c]].ravel(), minlength=size) / group[y[:, c]].size
        bin_neg = np.bincount(group[~y[:, c]].ravel(), minlength=size) / group[~y[:, c]].size
        for step, k in enumerate(rep.levels):
            g = signal(design, rep.k50[c:c + 1], k)
            sd = design.column_scale * column_sd(design, g, step)
            mean = design.column_scale * g * design.separation
            if collapsed(k, pie_sparsity):
                means = np.repeat(np.concatenate([np.zeros(1), mean]), FRAGILITY_BINS)
                sds = np.sqrt(sd ** 2 + np.tile(bin_scale, 2) ** 2)
                ap[step, c] = population_ap(prevalence, bin_pos, bin_neg, means, sds)
            else:
                ap[step, c] = population_ap(prevalence, true_pos, true_neg, np.concatenate([np.zeros(1), mean]),
                                            np.repeat(sd, 2))
    return ap


def safe_level(ap: np.ndarray, levels: list[float], margin: float) -> float | None:
    """The largest level whose population mAP loses less than ``margin`` (relative) there and at
    every lower level: what the non-inferiority sequence of the evaluate stage estimates."""
    change = ap.mean(axis=1) / ap[0].mean() - 1.0
    return evaluate.max_safe_level(levels, [bool(d <= -margin) for d in change])


def curve_targets(rep: Replicate, design: Design, cfg: AnalyzeConfig, margin: float, rng: np.random.Generator
                  ) -> dict[str, float | None]:
    """Target of finding 1: the true safe level (``margin``: the evaluate stage's). Findings
    2-5 read chance-corrected AUROC statistics (:mod:`cxrprune.analysis.chance_corrected`),
    which have no bootstrap interval (the resamples hold AP only), so there is no interval
    whose coverage a target could measure; they get none rather than one of another statistic."""
    ap = population_ap_table(rep, design, cfg.pie_sparsity, rng)
    return {"safe_sparsity": _finite(v) if (v := safe_level(ap, rep.levels, margin)) is not None else None}


def pie_probability(rep: Replicate, design: Design, cfg: AnalyzeConfig, rng: np.random.Generator) -> np.ndarray:
    """Each test image's share of ``PIE_DRAWS`` redraws of its fragility (around the planted
    part) and of the seeds' collapsed networks in which it is a PIE (the dense networks are the
    replicate's own: their rows are the prior's order)."""
    dense = [t.loc[np.isclose(t["sparsity"].to_numpy(), 0.0)].reset_index(drop=True) for t in rep.tables]
    _, p_dense = pies.ensemble(dense, rep.classes)
    n, c = rep.true_labels.shape
    step = int(np.flatnonzero(np.isclose(rep.levels, cfg.pie_sparsity))[0])
    share = np.zeros(n)
    for _ in range(PIE_DRAWS):
        common = rng.standard_normal((n, c))
        fragility = draw_fragility(design, rep.planted, rng)
        total = np.zeros((n, c))
        for _seed in rep.seeds:
            k50_seed = rep.k50 + design.k50_seed_sd * rng.standard_normal(c)
            evidence = design.separation * rep.true_labels + rng.standard_normal((n, c))
            noise = column_sd(design, np.zeros(1), step)[0] * rng.standard_normal((n, c))
            total += expit(level_logits(design, k50_seed, evidence, noise, cfg.pie_sparsity, cfg.pie_sparsity,
                                        fragility, common, rng))
        share += pies.select_pies(pies.rowwise_spearman(p_dense, total / len(rep.seeds)), cfg.pie_fraction)
    return share / PIE_DRAWS


def pie_targets(rep: Replicate, design: Design, cfg: AnalyzeConfig, rng: np.random.Generator
                ) -> dict[str, float | None]:
    """Targets of findings 7-9 (module docstring); the truth rows are in test order."""
    w = pie_probability(rep, design, cfg, rng)
    many = pies.findings_counts(rep.test_labels, rep.classes) >= 3
    flipped = rep.truth["flipped"].to_numpy(dtype=np.float64) > 0
    quality = rep.truth["quality"].to_numpy(dtype=np.float64)
    return {"pie_3plus": _finite(_mean(many, w) / _mean(many, 1.0 - w)),
            "pie_label_noise": _finite(_mean(flipped, w) / _mean(flipped, 1.0 - w)),
            "pie_low_quality": _finite(_mean(quality, w) - _mean(quality, 1.0 - w))}


def _mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float(np.dot(values.astype(np.float64), weights) / total) if total > 0 else float("nan")


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
