"""Planted-effect replicates: labels, prediction tables and a truth table in the pipeline's contracts.

One replicate is what the evaluate and analyze stages would read after ``prepare`` and
``prune``: prepared train and test label tables (``image_id, patient_id, <classes>``, int8),
the synthetic truth table (``image_id, split, flipped, flipped_class, quality,
degradation``) and one prediction table per seed
(:func:`cxrprune.compression.predictions.predictions_table`: ``image_id, method, sparsity``
and a float32 probability per class, one ``l1`` block per level). Nothing is trained: the
scores are drawn from a model whose every mechanism is switched by one effect size ``e`` in
:data:`~cxrprune.validation.effects.EFFECT_RANGE`; ``e = 0`` is the null of every finding at once.

Labels and patients come from the synthetic generator's planner
(:func:`cxrprune.datasets.synth.generate.plan_dataset`: the NIH-CXR-LT long tail and
co-occurrence, 1 + Poisson images per patient, patient-disjoint splits, a floor of positives
per class and split), redrawn for every replicate.

Scores, per seed ``s``, level ``k``, test image ``i`` and class ``c`` (logits):

- *columns* (what AP sees): ``h = g_cs(k) (delta t_ic + eps_ic) + seed noise + drift``, with
  ``t`` the true label, ``eps`` the image's own appearance (shared by seeds) and ``g`` a
  logistic signal that falls from 1 to 0 around the class's forgetting point ``k50_cs``, so
  AP falls to the prevalence as ``k`` passes it. ``k50_c = k50_mean + e slope z_c + noise``,
  ``z_c`` the standardised ln(train count): rare classes forgotten earlier when ``e > 0``
  (findings 2-3, 4 through the curves). FCD (finding 5): ``k50`` is pulled towards the
  IoU-weighted mean of the co-occurring classes' by ``e pull``.
- *rows* (what the PIE ranking sees): ``prior_c + column_scale h``: the class prior (one step
  of ``prior_gap`` per frequency rank) dominates, so the dense model ranks every image's
  classes alike and labels cannot move a row's ranking. From ``analyze.pie_sparsity`` on, the
  pruned networks collapse: each image's row is perturbed by ``fragility_i xi_ic`` (the
  networks' outputs are prior plus image-specific noise, every class at chance as in real
  runs at 90-95%), and the PIEs are the images with the most fragile rankings.
  ``ln fragility_i = fragility_sd u_i + e (ambiguity_gain a_i + quality_gain severity_i +
  rarity_gain rarity_i + findings_gain [3+ findings])``: at ``e = 0`` PIE-ness is
  independent of labels, flips and quality (findings 6-9 null), at ``e > 0`` ambiguous
  (more often flipped), degraded, rare-class and multi-finding images become PIEs.

Label noise is a property of the data, the same at every ``e``: ambiguous images are flipped
more often (``flip_ambiguity``), one label each, by the generator's own
:func:`~cxrprune.datasets.synth.generate.flip_one_label`; only the link from ambiguity to
fragility carries the effect. Train labels are not flipped (the train counts are what the
classes were trained with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from cxrprune.analysis import fcd, forgetting
from cxrprune.analysis.summary import METHOD
from cxrprune.compression.predictions import LevelResult, predictions_table
from cxrprune.core.classes import NIH_CXR_LT_CLASSES, NO_FINDING
from cxrprune.core.config import SyntheticConfig
from cxrprune.core.errors import ConfigError
from cxrprune.datasets.synth.generate import PatientPlan, flip_one_label, image_id, plan_dataset
from cxrprune.datasets.synth.render import DEGRADATIONS
from cxrprune.validation.effects import check_effect

TRUTH_COLUMNS = ["image_id", "split", "flipped", "flipped_class", "quality", "degradation"]


@dataclass(frozen=True)
class Design:
    """Sizes and mechanism strengths of a replicate (the defaults are the committed table's).

    Sizes: 1,400 patients, 45% of them in test, give ~1,900 test images (~95 PIEs at 5%) and
    ~2,200 train images; with the study's 5 seeds x 20 levels a replicate takes ~2.2 s of one
    core without intervals and 3.6 s (median) with 50 bootstrap resamples and the coverage
    targets (AMD EPYC), so 3 settings x 200 replicates take 37 CPU-minutes: 19 minutes on 2
    cores, inside the 30 the committed table may take. The test set is
    large enough that every class keeps >= 8 test positives (the planner's floor) and small
    enough that AP stays a noisy estimate for the rare classes, as on NIH-CXR-LT's tail.
    Strengths: at ``e = 1`` the forgetting points span ~0.45-0.8 over the classes before the
    FCD pull (the paper's first drops span 0.5-0.9); the PIE gains are sized so that
    ``e = 0.5`` is detected often but not always (rarity gets the largest gain: a rare class
    has a handful of test positives, so its enrichment is the hardest to see).
    """

    # Labels (the synthetic planner's knobs).
    n_patients: int = 1400
    images_per_patient: float = 3.0
    test_fraction: float = 0.45
    val_fraction: float = 0.05
    min_positives: int = 8
    min_train_positives: int = 25
    # Columns: the AP model.
    separation: float = 1.5  # delta: dense AUROC ~0.85 for every class
    seed_noise: float = 0.3  # a seed's own fixed noise (the same at every level)
    drift_step: float = 0.05  # random-walk step per level: pruning more moves the outputs more
    k50_mean: float = 0.6
    k50_slope: float = 0.1  # at e = 1: change of k50 per SD of ln(train count)
    k50_class_sd: float = 0.05  # class-level noise of k50 (the classes are a draw too)
    k50_seed_sd: float = 0.02  # seed-level noise of k50
    k50_bounds: tuple[float, float] = (0.1, 0.85)  # every class forgotten before the collapse
    width: float = 0.04  # of the logistic signal around k50
    pull: float = 0.8  # at e = 1: weight of the co-occurring classes' mean k50 (FCD)
    # Rows: the PIE model.
    prior_gap: float = 1.0  # logit step of the class prior per frequency rank
    column_scale: float = 0.01  # the AP model's logits inside a row: far below prior_gap
    fragility_sd: float = 0.5
    image_share: float = 0.7  # share of the collapse perturbation common to the seeds
    ambiguity_gain: float = 0.8
    quality_gain: float = 1.0
    rarity_gain: float = 2.0  # rare classes have few test positives: the weakest signal needs the largest gain
    findings_gain: float = 0.4
    # Truth: label noise and quality (as the synthetic dataset's defaults).
    flip_rate: float = 0.05  # of an image of average ambiguity (~7% of all images with flip_ambiguity 1)
    flip_ambiguity: float = 1.0  # log-odds of a flip per SD of ambiguity, at every e
    degrade_rate: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
                raise ConfigError(f"validation design: {f.name} must be a finite non-negative number, got {value!r}")
        if not 0 < self.k50_bounds[0] < self.k50_bounds[1] < 1:
            raise ConfigError(f"validation design: k50_bounds must be 0 < low < high < 1, got {self.k50_bounds}")
        if not 0 < self.flip_rate < 1 or not 0 <= self.degrade_rate < 1 or not 0 <= self.image_share <= 1:
            raise ConfigError("validation design: flip_rate in (0, 1), degrade_rate in [0, 1), image_share in [0, 1]")


@dataclass
class Replicate:
    """One replicate in the stages' contracts, and the parameters it was drawn with."""

    classes: list[str]
    seeds: list[int]
    levels: list[float]
    train_labels: pd.DataFrame  # image_id, patient_id, <classes> (int8): labels_train.parquet
    test_labels: pd.DataFrame  # the same for labels_test.parquet (the noisy labels)
    truth: pd.DataFrame  # TRUTH_COLUMNS, test images: truth.parquet
    tables: list[pd.DataFrame]  # per seed: the prediction-table contract, one l1 block per level
    true_labels: np.ndarray  # (N, C) int8: the test labels before flipping
    k50: np.ndarray  # (C,) the classes' forgetting points (the seeds scatter around them)
    planted: np.ndarray  # (N,) the planted part of each test image's log fragility (0 at e = 0)
    effect: float


def generate(design: Design, effect: float, levels: Sequence[float], n_seeds: int, pie_sparsity: float,
             rng: np.random.Generator) -> Replicate:
    """Draw one replicate (module docstring). ``levels`` must include 0 and ``pie_sparsity``,
    from which level on the pruned networks collapse."""
    effect = check_effect(effect)
    levels = sorted(float(k) for k in levels)
    if not levels or levels[0] != 0.0 or not any(abs(k - pie_sparsity) < 1e-9 for k in levels):
        raise ConfigError(f"validation: levels {levels} must include 0 and analyze.pie_sparsity {pie_sparsity:g}")
    classes = list(NIH_CXR_LT_CLASSES)
    train, true, patients = _labels(design, classes, rng)
    counts = forgetting.train_counts(train, classes).to_numpy(np.float64)
    k50 = _forgetting_points(design, effect, counts, train[classes].to_numpy(), rng)

    n, c = true.shape
    ambiguity = rng.standard_normal(n)
    noisy, flipped = _flip(design, true, ambiguity, rng)
    severity, kind = _degrade(design, n, rng)
    quality = 1.0 - 0.75 * severity  # render.degrade's scale: 1 pristine, 0.25 at full severity
    rarity = _rarity(true, counts, classes)
    many = true[:, [i for i, name in enumerate(classes) if name != NO_FINDING]].sum(axis=1) >= 3
    planted = effect * (design.ambiguity_gain * ambiguity + design.quality_gain * severity
                        + design.rarity_gain * rarity + design.findings_gain * many)
    fragility = draw_fragility(design, planted, rng)

    ids = [image_id(p, k) for p, k in patients]
    test_labels = _table(ids, [f"{p:08d}" for p, _ in patients], noisy, classes)
    truth = pd.DataFrame({"image_id": ids, "split": "test", "flipped": (flipped >= 0).astype(np.int64),
                          "flipped_class": [classes[j] if j >= 0 else "" for j in flipped],
                          "quality": quality, "degradation": kind}, columns=TRUTH_COLUMNS)
    evidence = design.separation * true + rng.standard_normal((n, c))  # the image's own appearance
    common = rng.standard_normal((n, c))  # the collapse perturbation the seeds share
    tables = [_seed_table(design, k50, evidence, fragility, common, levels, pie_sparsity, ids, classes, rng)
              for _ in range(n_seeds)]
    return Replicate(classes, list(range(n_seeds)), levels, train, test_labels, truth, tables, true, k50, planted,
                     effect)


def _labels(design: Design, classes: list[str], rng: np.random.Generator
            ) -> tuple[pd.DataFrame, np.ndarray, list[tuple[int, int]]]:
    """The train table, the test images' true label matrix and the (patient, k) of each test
    image, from the synthetic planner (label noise off: flips are planted here)."""
    cfg = SyntheticConfig(seed=int(rng.integers(2**32)), n_patients=design.n_patients,
                          images_per_patient=design.images_per_patient, val_fraction=design.val_fraction,
                          test_fraction=design.test_fraction, min_positives=design.min_positives,
                          min_train_positives=design.min_train_positives, label_noise=0.0)
    plans = plan_dataset(cfg)

    def rows(split: str) -> tuple[list[tuple[int, int]], np.ndarray]:
        members: list[PatientPlan] = [p for p in plans if p.split == split]
        where = [(p.patient, k) for p in members for k in range(len(p.true))]
        return where, np.array([row for p in members for row in p.true], dtype=np.int8)

    train_where, train_y = rows("train")
    test_where, test_y = rows("test")
    train = _table([image_id(p, k) for p, k in train_where], [f"{p:08d}" for p, _ in train_where], train_y, classes)
    return train, test_y, test_where


def _table(ids: list[str], patients: list[str], y: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """A prepared label table: ``image_id, patient_id`` and one int8 column per class."""
    out = pd.DataFrame({"image_id": pd.Series(ids, dtype=str), "patient_id": pd.Series(patients, dtype=str)})
    return pd.concat([out, pd.DataFrame(y.astype(np.int8), columns=classes)], axis=1)


def _forgetting_points(design: Design, effect: float, counts: np.ndarray, train_y: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """``k50_c``: frequency slope and class noise, then the pull towards co-occurring classes."""
    ln_f = np.log(np.maximum(counts, 1.0))
    z = (ln_f - ln_f.mean()) / ln_f.std()
    k50 = design.k50_mean + effect * design.k50_slope * z + design.k50_class_sd * rng.standard_normal(len(z))
    _, iou = fcd.label_statistics(train_y, "plain")  # the FCD analysis's own IoU
    w = np.nan_to_num(iou)
    np.fill_diagonal(w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    neighbours = np.where(total[:, 0] > 0, (w @ k50) / np.where(total[:, 0] > 0, total[:, 0], 1.0), k50)
    pull = effect * design.pull
    return np.clip((1.0 - pull) * k50 + pull * neighbours, *design.k50_bounds)


def _flip(design: Design, true: np.ndarray, ambiguity: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the flipped class per image (-1: none). A flip that would leave a class
    without a positive or a negative test image is skipped (AP or AUROC would be undefined;
    with >= 8 positives per class it practically never happens)."""
    p = expit(logit(design.flip_rate) + design.flip_ambiguity * ambiguity)
    chosen = np.flatnonzero(rng.random(len(true)) < p)
    noisy = true.copy()
    flipped = np.full(len(true), -1, dtype=np.int64)
    positives = noisy.sum(axis=0).astype(np.int64)
    for i in chosen:
        row, cls = flip_one_label(noisy[i], rng)
        new = positives + row.astype(np.int64) - noisy[i].astype(np.int64)
        if (new == 0).any() or (new == len(true)).any():
            continue
        noisy[i], flipped[i], positives = row, cls, new
    return noisy, flipped


def _degrade(design: Design, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Severity (0 for pristine images) and the degradation kind ("none" or one of
    :data:`~cxrprune.datasets.synth.render.DEGRADATIONS`), at the synthetic data's rate."""
    degraded = rng.random(n) < design.degrade_rate
    severity = np.where(degraded, rng.uniform(0.25, 1.0, n), 0.0)
    kind = np.where(degraded, np.asarray(DEGRADATIONS, dtype=object)[rng.integers(len(DEGRADATIONS), size=n)], "none")
    return severity, kind


def _rarity(true: np.ndarray, counts: np.ndarray, classes: list[str]) -> np.ndarray:
    """Per image, how rare its rarest true finding is: 0 (the most frequent class, or none)
    to 1 (the rarest), on the ln(train count) scale."""
    ln_f = np.log(np.maximum(counts, 1.0))
    r = (ln_f.max() - ln_f) / max(ln_f.max() - ln_f.min(), 1e-12)
    r[[i for i, name in enumerate(classes) if name == NO_FINDING]] = 0.0
    return (true * r).max(axis=1)


def draw_fragility(design: Design, planted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fragility: log-normal around the planted part, which only ``e > 0`` makes depend on the image."""
    return np.exp(design.fragility_sd * rng.standard_normal(planted.shape) + planted)


def signal(design: Design, k50: np.ndarray, k: float) -> np.ndarray:
    """The share of the dense evidence a network keeps at level ``k``: a logistic that falls
    from ~1 to 0 around its forgetting point ``k50`` (per class)."""
    return expit((k50 - k) / design.width)


def column_sd(design: Design, g: np.ndarray, step: int) -> np.ndarray:
    """SD of a column logit (before ``column_scale``) at the ``step``-th level given the true
    label: appearance ``g eps``, the seed's fixed noise and ``step`` random-walk drifts. Its
    mean is ``g separation t``; :mod:`.truth` integrates AP over exactly these moments."""
    return np.sqrt(g ** 2 + design.seed_noise ** 2 + design.drift_step ** 2 * step)


def collapsed(level: float, pie_sparsity: float) -> bool:
    """Whether the networks at ``level`` have collapsed (module docstring): from the PIE level on."""
    return level >= pie_sparsity - 1e-9


def collapse_noise(design: Design, fragility: np.ndarray, common: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One collapsed network's perturbation of every image's row: ``fragility_i`` times noise
    whose ``image_share`` of variance ``common`` (N, C) is the same for every seed."""
    own = rng.standard_normal(common.shape)
    return fragility[:, None] * (math.sqrt(design.image_share) * common + math.sqrt(1.0 - design.image_share) * own)


def prior_logits(design: Design, n_classes: int) -> np.ndarray:
    """The class prior of every network: one ``prior_gap`` per rank (classes in descending train frequency)."""
    return -design.prior_gap * (1.0 + np.arange(n_classes))


def level_logits(design: Design, k50_seed: np.ndarray, evidence: np.ndarray, noise: np.ndarray, k: float,
                 pie_sparsity: float, fragility: np.ndarray, common: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """One network's logits (N, C) at level ``k``: the prior, the column part (``evidence``
    weighted by the signal, plus the seed's ``noise``) and, once collapsed, the row perturbation."""
    logits = prior_logits(design, evidence.shape[1]) + design.column_scale * (
        signal(design, k50_seed, k) * evidence + noise)
    if collapsed(k, pie_sparsity):
        logits = logits + collapse_noise(design, fragility, common, rng)
    return logits


def _seed_table(design: Design, k50: np.ndarray, evidence: np.ndarray, fragility: np.ndarray, common: np.ndarray,
                levels: list[float], pie_sparsity: float, ids: list[str], classes: list[str],
                rng: np.random.Generator) -> pd.DataFrame:
    """One seed's prediction table: an l1 block per level, float32 probabilities."""
    n, c = evidence.shape
    k50_seed = k50 + design.k50_seed_sd * rng.standard_normal(c)
    noise = design.seed_noise * rng.standard_normal((n, c))  # the seed's own, then a drift per level
    blocks = []
    for step, k in enumerate(levels):
        if step:
            noise += design.drift_step * rng.standard_normal((n, c))
        logits = level_logits(design, k50_seed, evidence, noise, k, pie_sparsity, fragility, common, rng)
        blocks.append(LevelResult(METHOD, k, k, expit(logits).astype(np.float32)))
    return predictions_table(blocks, ids, classes)
