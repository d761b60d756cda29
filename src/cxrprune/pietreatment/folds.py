"""Out-of-fold PIEs of the training set.

The training patients are split into K patient-disjoint folds; for every fold, the seeds'
models trained on the other folds score that fold's images, dense and L1-pruned at
``analyze.pie_sparsity``, with the per-image Spearman correlation of the test-set PIEs
(:func:`cxrprune.analysis.pies.rowwise_spearman`). So no image is scored by a model that
saw it. Training-set PIEs are the bottom ``analyze.pie_fraction`` of all training images
(:func:`cxrprune.analysis.pies.select_pies`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrprune.analysis.pies import enrichment_p, rowwise_spearman, select_pies
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.core.layout import PIE_STUDY


def assign_folds(labels: pd.DataFrame, classes: Sequence[str], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every row of a training table; all images of a patient share one.

    Greedy and stratified on the rarest class: patients are visited rarest-class first
    (random order within, from ``seed``), each joining the fold with the fewest positives of
    its rarest class so far (ties: fewest images, then lowest id), so every fold gets a
    share of every class that has at least K positive patients.
    """
    y = labels[list(classes)].to_numpy(np.int64)
    patient, inverse = np.unique(labels["patient_id"].astype(str).to_numpy(), return_inverse=True)
    n_patients = len(patient)
    if n_patients < k:
        raise ConfigError(f"pie_treatment.folds: {k} folds but the training split has {n_patients} patients; "
                          f"use fewer folds")
    pos = np.zeros((n_patients, len(classes)), dtype=np.int64)
    np.add.at(pos, inverse, y)
    images = np.bincount(inverse, minlength=n_patients)
    totals = pos.sum(axis=0).astype(np.float64)
    rarity = np.where(pos > 0, totals[None, :], np.inf)
    rarest = np.argmin(rarity, axis=1)
    has_any = np.isfinite(rarity.min(axis=1))
    order = np.random.default_rng(seed).permutation(n_patients)
    order = order[np.argsort(rarity.min(axis=1)[order], kind="stable")]
    fold_pos = np.zeros((k, len(classes)), dtype=np.int64)
    fold_images = np.zeros(k, dtype=np.int64)
    fold_of = np.empty(n_patients, dtype=np.int64)
    for p in order:
        first = fold_pos[:, rarest[p]] if has_any[p] else np.zeros(k, dtype=np.int64)
        f = int(np.lexsort((np.arange(k), fold_images, first))[0])
        fold_of[p] = f
        fold_pos[f] += pos[p]
        fold_images[f] += images[p]
    return fold_of[inverse]


def check_folds(labels: pd.DataFrame, classes: Sequence[str], fold: np.ndarray, k: int) -> None:
    """Every fold holds a positive of every class: with K=2 a fold's images are the only
    training data of the model that scores the other fold, so a class missing from a fold
    is one that model never learns (its scores would be noise, not PIEs)."""
    y = labels[list(classes)].to_numpy(np.int64)
    for f in range(k):
        counts = y[fold == f].sum(axis=0)
        missing = [c for c, n in zip(classes, counts) if n == 0]
        if missing:
            total = int(y[:, list(classes).index(missing[0])].sum())
            raise ConfigError(f"pie_treatment.folds: fold {f} of {k} has no training image positive for "
                              f"{missing[0]!r} ({total} positive image(s) in the whole training split"
                              f"{f', and {len(missing) - 1} more class(es)' if len(missing) > 1 else ''}); "
                              f"use fewer folds or more training images")


def fold_rows(fold: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows the fold-``f`` model trains on, rows it scores): the other folds, and fold ``f``."""
    fold = np.asarray(fold)
    return np.flatnonzero(fold != f), np.flatnonzero(fold == f)


def check_fraction(fraction: float, n_images: int) -> None:
    """``analyze.pie_fraction`` must select at least one training image."""
    if int(fraction * n_images) < 1:
        raise ConfigError(f"analyze.pie_fraction = {fraction:g} selects no image of the {n_images} training images "
                          f"(int(fraction x N) = 0); raise analyze.pie_fraction to at least {1 / max(n_images, 1):.4g}")


def out_of_fold_correlation(fold: np.ndarray, image_ids: Sequence[str],
                            scored: Mapping[int, Sequence[tuple[pd.DataFrame, pd.DataFrame]]],
                            classes: Sequence[str]) -> np.ndarray:
    """The Spearman correlation of every training image between the dense and the pruned
    ensemble of the models that did not train on it.

    ``scored[f]`` holds, per seed, the (dense, pruned) prediction blocks of fold ``f``'s
    images in training-table order. Every image gets exactly one value, from its own fold.
    """
    ids = np.asarray([str(i) for i in image_ids], dtype=object)
    corr = np.full(len(ids), np.nan)
    for f in np.unique(fold):
        rows = np.flatnonzero(fold == f)
        pairs = scored.get(int(f), [])
        if not pairs:
            raise DataError(f"fold {f}: no predictions; run `dvc repro {PIE_STUDY}`")
        dense = np.zeros((len(rows), len(classes)))
        pruned = np.zeros((len(rows), len(classes)))
        for i, (d, p) in enumerate(pairs):
            for block in (d, p):
                if not np.array_equal(block["image_id"].astype(str).to_numpy(), ids[rows]):
                    raise DataError(f"fold {f}: prediction table {i} does not list the fold's training images in "
                                    f"order; rerun the pie-fold stages")
            dense += d[list(classes)].to_numpy(np.float64)
            pruned += p[list(classes)].to_numpy(np.float64)
        corr[rows] = rowwise_spearman(dense / len(pairs), pruned / len(pairs))
    return corr


def train_pies(corr: np.ndarray, fraction: float) -> np.ndarray:
    """Training-set PIEs: the bottom ``fraction`` of all training images (stable ties)."""
    check_fraction(fraction, len(corr))
    return select_pies(corr, fraction)


def detection(flag: np.ndarray, is_pie: np.ndarray) -> dict[str, float | int | None]:
    """How well PIEs find the flagged images (flipped labels, degraded images):
    precision = P(flag | PIE), recall = P(PIE | flag), against the base rate P(flag)
    (a random selection's expected precision) and the PIE fraction (its expected recall),
    with the one-sided Fisher p-value of enrichment."""
    flag = np.asarray(flag, dtype=bool)
    is_pie = np.asarray(is_pie, dtype=bool)
    hit = int((flag & is_pie).sum())
    n_pie, n_flag, n = int(is_pie.sum()), int(flag.sum()), len(flag)
    precision = hit / n_pie if n_pie else None
    base = n_flag / n if n else None
    return {"n": n, "flagged": n_flag, "pies": n_pie, "hits": hit, "precision": precision,
            "recall": hit / n_flag if n_flag else None, "base_rate": base,
            "random_recall": n_pie / n if n else None,
            "lift": precision / base if precision is not None and base else None,
            "p": enrichment_p(flag, is_pie)}


def truth_summary(truth: pd.DataFrame, is_pie: np.ndarray) -> dict[str, dict]:
    """Precision and recall of training PIEs for flipped labels and for degraded images."""
    return {"flipped": detection(truth["flipped"].to_numpy() > 0, is_pie),
            "degraded": detection((truth["degradation"].astype(str) != "none").to_numpy(), is_pie)}
