"""Write the synthetic dataset in the NIH-CXR-LT layout (see docs/ARCHITECTURE.md).

Generation has two phases. Planning (cheap, one process) decides every image's true
labels, its patient and split, the label-noise flips and the top-up images that give
every class ``min_positives`` positives per split. Rendering (the expensive part) is
parallel over patients. Every random stream comes from ``SeedSequence(seed, spawn_key=
(stream, patient[, image]))``, so the bytes written depend only on the config, never on
the number of processes or the order in which workers finish.

The CSVs carry the *noisy* labels (as a real, NLP-mined label file would) while images
are rendered from the *true* labels; ``synthetic_truth.csv`` records which images were
flipped or degraded so the PIE analysis can be checked against ground truth.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from cxrprune.core.atomic import atomic_dir
from cxrprune.core.classes import NIH_CXR_LT_CLASSES, nih_train_prevalence
from cxrprune.core.config import SyntheticConfig
from cxrprune.core.errors import ConfigError
from cxrprune.datasets.synth import mechanisms, render
from cxrprune.datasets.synth.labels import (
    FINDING_INDICES,
    NO_FINDING_INDEX,
    sample_labels,
    sample_labels_given,
)

SPLITS = ("train", "val", "test")
TRUTH_FILE = "synthetic_truth.csv"
IMAGE_DIR = "images"
PERSISTENCE = 0.5  # chance that a follow-up image repeats the patient's previous findings
_PARALLEL_MIN_IMAGES = 400  # below this, worker start-up costs more than it saves

# Independent random streams; the numbers are part of the output's identity.
_LABELS, _SPLIT, _NOISE, _TOP_UP, _ANATOMY, _IMAGE, _EXTRA_NOISE, _AMBIGUITY, _MOTTLE = range(9)


def label_file(split: str) -> str:
    return f"miccai2023_nih-cxr-lt_labels_{split}.csv"


def stream(seed: int, *key: int) -> np.random.Generator:
    """The generator of one named stream (and patient, and image)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass
class PatientPlan:
    """One patient's images: true labels, CSV labels and the flipped class (-1: none)."""

    patient: int
    split: str
    true: list[np.ndarray] = field(default_factory=list)
    noisy: list[np.ndarray] = field(default_factory=list)
    flipped: list[int] = field(default_factory=list)

    def add(self, labels: np.ndarray) -> None:
        self.true.append(labels.copy())
        self.noisy.append(labels.copy())
        self.flipped.append(-1)


# --------------------------------------------------------------------------- planning


def plan_dataset(cfg: SyntheticConfig) -> list[PatientPlan]:
    """Labels, splits, label noise and top-ups for every patient, in patient order."""
    splits = _assign_splits(cfg)
    plans = [_patient_plan(cfg, patient, splits[patient - 1]) for patient in range(1, cfg.n_patients + 1)]
    _add_label_noise(plans, cfg)
    # Test-only patients come after the others with their own noise stream, so adding them changes
    # nothing of the first n_patients (train and val stay byte-identical).
    extra = [_patient_plan(cfg, patient, "test")
             for patient in range(cfg.n_patients + 1, cfg.n_patients + cfg.extra_test_patients + 1)]
    _add_label_noise(extra, cfg, _EXTRA_NOISE)
    plans += extra
    _top_up(plans, cfg)
    return plans


def _patient_plan(cfg: SyntheticConfig, patient: int, split: str) -> PatientPlan:
    plan = PatientPlan(patient, split)
    for labels in _patient_labels(cfg, patient):
        plan.add(labels)
    return plan


def _assign_splits(cfg: SyntheticConfig) -> list[str]:
    """Patient-disjoint splits by patient fractions (at least one patient each)."""
    n = cfg.n_patients
    n_test = max(1, round(cfg.test_fraction * n))
    n_val = max(1, round(cfg.val_fraction * n))
    if n - n_test - n_val < 1:
        raise ConfigError(f"synthetic.val_fraction + synthetic.test_fraction leave no training patients "
                          f"out of {n}; lower them or raise synthetic.n_patients")
    order = stream(cfg.seed, _SPLIT).permutation(n)
    splits = np.full(n, "train", dtype=object)
    splits[order[:n_test]] = "test"
    splits[order[n_test:n_test + n_val]] = "val"
    return list(splits)


def _patient_labels(cfg: SyntheticConfig, patient: int) -> np.ndarray:
    """1 + Poisson(mean - 1) label vectors; follow-ups often repeat the previous findings.

    Repeating a row that is itself a draw from the label model keeps every image's
    marginal distribution unchanged while making a patient's images correlated.
    """
    rng = stream(cfg.seed, _LABELS, patient)
    n = 1 + int(rng.poisson(cfg.images_per_patient - 1.0))
    labels = sample_labels(n, rng)
    repeat = rng.random(n) < PERSISTENCE
    for k in range(1, n):
        if repeat[k]:
            labels[k] = labels[k - 1]
    return labels


def _add_label_noise(plans: list[PatientPlan], cfg: SyntheticConfig, key: int = _NOISE) -> None:
    """Flip exactly one CSV label in ``round(label_noise * N)`` images."""
    slots = [(i, k) for i, plan in enumerate(plans) for k in range(len(plan.true))]
    if not slots:
        return
    rng = stream(cfg.seed, key)
    chosen = rng.choice(len(slots), size=round(cfg.label_noise * len(slots)), replace=False)
    for s in np.sort(chosen):
        i, k = slots[s]
        noisy, flipped = flip_one_label(plans[i].true[k], rng)
        plans[i].noisy[k], plans[i].flipped[k] = noisy, flipped


def flip_one_label(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Add a wrong finding or drop a true one, keeping No Finding consistent.

    Added findings follow the prevalence (label-mining errors hit common words more
    often), so rare classes are not swamped by false positives.
    """
    noisy = labels.copy()
    present = [c for c in FINDING_INDICES if labels[c]]
    if present and rng.random() < 0.5:
        c = int(rng.choice(present))
        noisy[c] = 0
        noisy[NO_FINDING_INDEX] = int(len(present) == 1)
        return noisy, c
    absent = [c for c in FINDING_INDICES if not labels[c]]
    weights = nih_train_prevalence()[absent]
    c = int(rng.choice(absent, p=weights / weights.sum()))
    noisy[c] = 1
    noisy[NO_FINDING_INDEX] = 0
    return noisy, c


def _top_up(plans: list[PatientPlan], cfg: SyntheticConfig) -> None:
    """Give every (split, class) ``min_positives`` CSV positives by adding images, every
    class at least ``min_train_positives`` in train (below a few dozen examples a CNN learns
    nothing, and a class that was never learned cannot be forgotten by pruning) and at least
    ``min_test_positives`` in test (the per-class test statistics' power).

    Each added image belongs to a random patient of the split and is drawn from the
    label model conditioned on the missing class, so co-occurrence stays realistic.
    """
    for i, split in enumerate(SPLITS):
        rng = stream(cfg.seed, _TOP_UP, i)  # per split: the train floor leaves val and test as they are
        members = [p for p in plans if p.split == split]
        floor = {"train": max(cfg.min_positives, cfg.min_train_positives),
                 "test": max(cfg.min_positives, cfg.min_test_positives)}.get(split, cfg.min_positives)
        for c in range(len(NIH_CXR_LT_CLASSES)):
            count = sum(int(row[c]) for p in members for row in p.noisy)
            for _ in range(floor - count):
                members[int(rng.integers(len(members)))].add(sample_labels_given(1, rng, c)[0])


# --------------------------------------------------------------------------- rendering


def image_id(patient: int, k: int) -> str:
    return f"{patient:08d}_{k:03d}.png"


def render_patient(cfg: SyntheticConfig, image_dir: Path, task: tuple[int, str, list[np.ndarray], list[int]]
                   ) -> list[tuple[float, str]]:
    """Render and write one patient's images (``task``: patient, split, true labels, flipped class
    per image); returns (quality, degradation) per image.

    Under the ``label_noise`` route label noise is not independent of the image, as with
    report-mined labels: the flipped class is drawn faintly (an ambiguous finding is what a
    report gets wrong). ``cfg.mechanisms`` says which routes are planted
    (:mod:`~cxrprune.datasets.synth.mechanisms`); the PIE routes draw into test images only.
    """
    patient, split, true_labels, flipped = task
    body_rng = stream(cfg.seed, _ANATOMY, patient)
    anatomy, geometry = render.draw_anatomy(body_rng), render.draw_geometry(body_rng)
    frequency = mechanisms.strength(cfg.mechanisms, cfg.effect, "frequency")
    extent = mechanisms.class_extent(frequency)
    faint_effect = mechanisms.strength(cfg.mechanisms, cfg.effect, "label_noise")
    quality_effect = mechanisms.strength(cfg.mechanisms, cfg.effect, "quality")
    # The PIE routes plant an association the PIE analyses read on the test split, and only there:
    # in training images they would also change what the networks learn (unlabelled findings are
    # missed positives of those classes; mottle in training teaches the networks to discount it),
    # and a route must move only its own statistic.
    test = split == "test"
    ambiguity = mechanisms.strength(cfg.mechanisms, cfg.effect, "ambiguity") if test else 0.0
    mottle = mechanisms.strength(cfg.mechanisms, cfg.effect, "mottle") if test else 0.0
    results = []
    for k, labels in enumerate(true_labels):
        rng = stream(cfg.seed, _IMAGE, patient, k)
        # Each route that adds to an image draws from a stream of its own, so turning it on
        # changes no other pixel of the image and no other image.
        traces = (mechanisms.ambiguous_findings(labels, flipped[k], stream(cfg.seed, _AMBIGUITY, patient, k))
                  if ambiguity > 0 and flipped[k] >= 0 else [])
        image = render.render(labels, anatomy, geometry, rng, cfg.image_size, cfg.signal, faint=flipped[k],
                              faint_effect=faint_effect, extent=extent, polarity=frequency, traces=traces,
                              trace_strength=ambiguity * mechanisms.AMBIGUOUS_SEVERITY)
        image, quality, kind = render.degrade(image, rng, cfg.degrade_rate, quality_effect)
        if mottle > 0 and kind != "none":
            image = render.mottle(image, stream(cfg.seed, _MOTTLE, patient, k), quality,
                                  mechanisms.MOTTLE * mottle)
        Image.fromarray(render.to_uint8(image)).save(image_dir / image_id(patient, k), format="PNG")
        results.append((quality, kind))
    return results


def _render_all(plans: list[PatientPlan], cfg: SyntheticConfig, image_dir: Path) -> list[list[tuple[float, str]]]:
    """Render every patient, in a process pool when there is enough work; results in patient order."""
    tasks = [(p.patient, p.split, p.true, p.flipped) for p in plans]
    work = functools.partial(render_patient, cfg, image_dir)
    n_images = sum(len(p.true) for p in plans)
    processes = os.cpu_count() or 1
    parallel = processes > 1 and n_images >= _PARALLEL_MIN_IMAGES
    # The pool is forked before tqdm starts its monitor thread: forking a threaded process is unsafe.
    with multiprocessing.Pool(processes) if parallel else contextlib.nullcontext() as pool:
        results = pool.imap(work, tasks, chunksize=8) if pool is not None else map(work, tasks)
        with tqdm(total=n_images, desc="generate", unit="img", file=sys.stderr, mininterval=1.0) as bar:
            rendered = []
            for r in results:
                rendered.append(r)
                bar.update(len(r))
    return rendered


# --------------------------------------------------------------------------- tables


def _label_table(plans: list[PatientPlan], split: str) -> pd.DataFrame:
    members = [p for p in plans if p.split == split]
    labels = np.array([row for p in members for row in p.noisy], dtype=np.int8)
    table = pd.DataFrame(labels.reshape(-1, len(NIH_CXR_LT_CLASSES)), columns=list(NIH_CXR_LT_CLASSES))
    table.insert(0, "id", [image_id(p.patient, k) for p in members for k in range(len(p.noisy))])
    table["subj_id"] = [f"{p.patient:08d}" for p in members for _ in p.noisy]
    return table


def _truth_table(plans: list[PatientPlan], rendered: list[list[tuple[float, str]]]) -> pd.DataFrame:
    rows = []
    for p, results in zip(plans, rendered):
        for k, (quality, kind) in enumerate(results):
            c = p.flipped[k]
            rows.append((image_id(p.patient, k), p.split, int(c >= 0),
                         NIH_CXR_LT_CLASSES[c] if c >= 0 else "", quality, kind))
    return pd.DataFrame(rows, columns=["id", "split", "flipped", "flipped_class", "quality", "degradation"])


def generate_dataset(cfg: SyntheticConfig, out_dir: Path) -> dict:
    """Generate the whole dataset into ``out_dir`` (replaced atomically); returns a summary."""
    start = time.perf_counter()
    plans = plan_dataset(cfg)
    with atomic_dir(out_dir) as tmp:
        image_dir = tmp / IMAGE_DIR
        image_dir.mkdir()
        rendered = _render_all(plans, cfg, image_dir)
        counts = {}
        for split in SPLITS:
            table = _label_table(plans, split)
            table.to_csv(tmp / label_file(split), index=False)
            counts[split] = len(table)
        truth = _truth_table(plans, rendered)
        truth.to_csv(tmp / TRUTH_FILE, index=False)
    return {
        "counts": counts,
        "patients": {s: sum(p.split == s for p in plans) for s in SPLITS},
        "images": int(sum(counts.values())),
        "flipped": int(truth["flipped"].sum()),
        "degraded": int((truth["degradation"] != "none").sum()),
        "seconds": round(time.perf_counter() - start, 2),
    }
