"""The routes the synthetic generator can plant from an image to what the analyses measure.

The generator is the project's calibration: a finding that the pipeline reports on it should
be one that was planted, and a finding that was not planted should not be reported. So each
route is a switch (``synthetic.mechanisms``) with one strength (``synthetic.effect``, 0..1,
each route linear in it), and ``mechanisms: []`` is the negative control, no route at all:

- ``frequency``: rarer classes get the drawings that pruning keeps least of. With nothing
  planted, which findings an L1-pruned network forgets is set mostly by how each is drawn (a
  class's retained AUROC lift correlates across independent draws, mean pairwise Spearman rho
  0.65, and not with its frequency, rho +0.09: ``benchmarks/signature_fragility.py``, output in
  ``benchmarks/results/signature_fragility.txt``). :data:`FRAGILITY` orders the drawings by that
  measurement, least kept first; the route draws the k-th rarest class (:func:`rarity`) with the
  k-th drawing of that order (its severity range, anatomy change and drawing), in a share
  ``effect`` of patients (:func:`patient_drawings`). Labels, co-occurrence, splits and every
  other pixel are unchanged: the class keeps its name and its training count, and its evidence
  becomes the kind a pruned network loses first, so the paper's "rare classes are forgotten
  more" has a cause in the images. Two earlier forms were too weak to be found per draw: rarer
  classes drawn fainter (severity times ``1 - 0.25 * rarity``; "forgotten earlier" rho
  -0.09..0.17 in five planted draws) and rarer classes drawn focal and gas-like, commoner ones
  diffuse and opacity-like ("forgotten more" rho +0.04..+0.50, the rarest drawings often not
  learned at all): the class-to-class differences of the drawings outweighed the reshaping.
- ``label_noise``: the class whose CSV label is flipped is drawn faintly (borderline evidence,
  at ``render.FAINT`` of its lowest severity at effect 1), the ambiguity that makes a report
  wrong and a model unsure. Without it, flips live in the CSV only: the image shows the truth.
- ``quality``: degraded images are blurred, noised or mis-exposed with ``effect`` times the
  pixel change. Without it, the truth table still marks the same images as degraded, with the
  same nominal quality, but their pixels are untouched: a degraded image is no harder.
- ``ambiguity``: a test image with a flipped label is an ambiguous one: it also shows
  ``AMBIGUOUS_FINDINGS`` findings that no label names (absent from its true labels), each at
  ``effect * AMBIGUOUS_SEVERITY`` times its class's lowest severity, the borderline evidence a reader can argue
  about. Without it, a flipped image shows only what its true labels (and ``label_noise``) say.
- ``mottle``: a degraded test image also carries a fine, structured mottle (``MOTTLE`` times its
  degradation's severity times ``effect``, the scatter and grid artefacts of a poor exposure)
  whose texture resembles parenchymal opacities.

Why the last two exist. ``label_noise`` and ``quality`` do change the flipped and degraded
images, but a PIE is an image whose *ranking of the 20 classes* the pruned ensemble changes most
(:mod:`cxrprune.analysis.pies`). A faint trace of one class, or evidence blurred away, leaves an
image nearer the class prior, which pruning keeps: with trained networks held fixed, flipped and
degraded images drawn by those two routes are PIEs no more often than the others
(``benchmarks/pie_routes.py``, output in ``benchmarks/results/pie_routes.txt``). What moves a
ranking is evidence over several classes that the dense network reads and a pruned one reads
differently: several borderline findings (``ambiguity``) or opacity-like texture (``mottle``).
These two plant the paper's explanation (PIEs are ambiguous, mislabeled or poor-quality images)
in the test split only, which the PIE analyses read: in training images they would also change
what the networks learn (unlabelled findings are missed positives; mottle seen in training is
discounted), so they would move more than their own statistic. ``label_noise`` and ``quality`` make those images harder for both networks alike and plant no
finding (``cxrprune.analysis.findings``: each claim's ``routes``).

What a route changes is limited to its own images: with one route alone, every other image is
byte-identical to the negative control's (``tests/test_synth_mechanisms.py``), and the labels,
splits and truth table are identical under every setting.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxrprune.core.classes import NIH_CXR_LT_CLASSES, nih_train_prevalence
from cxrprune.core.config import MECHANISMS
from cxrprune.datasets.synth.labels import FINDING_INDICES

AMBIGUOUS_FINDINGS = 5  # unlabelled borderline findings an ambiguous (flipped) image shows
AMBIGUOUS_SEVERITY = 1.5  # their strength at effect 1, in multiples of each class's lowest severity
MOTTLE = 0.12  # mottle amplitude (image intensity, 0..1) of a degradation of severity 1 at effect 1
# The findings' drawings by how much of them L1-pruned networks kept with nothing planted, least
# first: the median over the five committed unplanted draws (README, Calibration) of the retained
# AUROC lift at 85% sparsity (benchmarks/results/signature_fragility.json, "order"; a test checks
# that this is that order).
FRAGILITY = ("Emphysema", "Nodule", "Pneumoperitoneum", "Pneumomediastinum", "Infiltration",
             "Subcutaneous Emphysema", "Calcification of the Aorta", "Atelectasis", "Hernia", "Mass",
             "Effusion", "Fibrosis", "Pneumothorax", "Tortuous Aorta", "Pneumonia", "Pleural Thickening",
             "Cardiomegaly", "Consolidation", "Edema")


def strength(mechanisms: Sequence[str], effect: float, mechanism: str) -> float:
    """The strength of ``mechanism`` in [0, 1]: ``effect`` if it is planted, else 0."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose from {', '.join(MECHANISMS)}")
    return float(effect) if mechanism in mechanisms else 0.0


def rarity() -> np.ndarray:
    """Each finding's rarity in [0, 1] (canonical finding order): 0 for the most frequent class of
    the label model (NIH-CXR-LT's training prevalence), 1 for the rarest, by rank, so the route's
    strength does not depend on how far apart two prevalences happen to be."""
    prevalence = nih_train_prevalence()[list(FINDING_INDICES)]
    order = np.argsort(-prevalence, kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(len(order))
    return ranks / (len(order) - 1)


def class_drawings() -> list[int]:
    """The ``frequency`` route's drawing of each finding position (canonical finding order): the
    position of the finding whose drawing it takes, the k-th rarest class the k-th of
    :data:`FRAGILITY`. A permutation, so each drawing is used once."""
    names = [NIH_CXR_LT_CLASSES[c] for c in FINDING_INDICES]
    rarest_first = np.argsort(-rarity(), kind="stable")
    drawings = np.empty(len(names), dtype=int)
    drawings[rarest_first] = [names.index(name) for name in FRAGILITY]
    return drawings.tolist()


def patient_drawings(frequency_effect: float, rng: np.random.Generator) -> list[int] | None:
    """One patient's drawings under the ``frequency`` route: :func:`class_drawings` for a share
    ``frequency_effect`` of patients (one uniform from the route's own stream ``rng``), ``None``
    (each finding its own drawing) for the others and when the route is off, so the unplanted
    generator consumes no other stream and stays byte-identical."""
    if frequency_effect <= 0.0 or rng.random() >= frequency_effect:
        return None
    return class_drawings()


def ambiguous_findings(true_labels: np.ndarray, flipped: int, rng: np.random.Generator) -> list[int]:
    """The finding positions (canonical finding order) an ambiguous image shows without any label
    naming them: ``AMBIGUOUS_FINDINGS`` drawn uniformly from the findings its true labels lack,
    other than the ``flipped`` class (whose drawing is the ``label_noise`` route's)."""
    absent = [j for j, c in enumerate(FINDING_INDICES) if not true_labels[c] and c != flipped]
    picks = rng.choice(len(absent), size=min(AMBIGUOUS_FINDINGS, len(absent)), replace=False)
    return sorted(absent[i] for i in picks)
