"""The routes the synthetic generator can plant from an image to what the analyses measure.

The generator is the project's calibration: a finding that the pipeline reports on it should
be one that was planted, and a finding that was not planted should not be reported. So each
route is a switch (``synthetic.mechanisms``) with one strength (``synthetic.effect``, 0..1,
each route linear in it), and ``mechanisms: []`` is the negative control, no route at all:

- ``frequency``: a finding's extent and polarity follow its class's frequency: rarer classes
  are drawn *focal* (kept only under a Gaussian window around the drawing's strongest point)
  and *dark* (gas-like), more frequent ones *diffuse* (a broad halo of the drawing's own
  polarity added around it, up to ``render.HALO`` times its peak) and *bright* (opacity-like),
  the extent by ``effect * (2 * rarity - 1)`` and the polarity in a share ``effect`` of patients
  (:func:`cxrprune.datasets.synth.render._reshape`; the median class unchanged). The paper's
  "rare classes are forgotten more" then has a cause in the images that acts through what
  pruning removes. Global average pooling reads a focal signature from a few positions and a
  diffuse one from many, and pruning adds feature noise at every position, so a focal
  signature's share of the pooled evidence drowns first while the dense network, whose
  background is quiet, reads both; and in the calibration draws with nothing planted the
  gas-like findings (emphysema, pneumothorax, pneumomediastinum, pneumoperitoneum,
  subcutaneous emphysema) kept the least of their AUROC at 85% sparsity, bright and extensive
  ones (edema, consolidation, mass) the most. Findings drawn only as an anatomy change
  (Cardiomegaly, Tortuous Aorta, and the anatomy part of Atelectasis and Emphysema) are not
  reshaped. Without the route a class's signature does not depend on its frequency (only the
  number of training examples does). Why not fainter: an earlier form drew rarer classes
  weaker (severity times ``1 - 0.25 * rarity``), which lowers the dense and the pruned
  network's separation alike; in five planted draws "forgotten earlier" had rho -0.09..0.17. Why
  the halo is broad and above the drawing: brought back to the drawing's own peak (a halo of
  half its peak, the form of commit ``f08c034``), it left "forgotten earlier" at rho
  -0.07..0.19 and "forgotten more" at 0.04..0.50 in that commit's five planted draws.
- ``label_noise``: the class whose CSV label is flipped is drawn faintly (borderline evidence,
  at ``render.FAINT`` of its lowest severity at effect 1), the ambiguity that makes a report
  wrong and a model unsure. Without it, flips live in the CSV only: the image shows the truth.
- ``quality``: degraded images are blurred, noised or mis-exposed with ``effect`` times the
  pixel change. Without it, the truth table still marks the same images as degraded, with the
  same nominal quality, but their pixels are untouched: a degraded image is no harder.
- ``ambiguity``: a test image with a flipped label is an ambiguous one: it also shows
  ``AMBIGUOUS_FINDINGS`` findings that no label names (absent from its true labels), each at
  ``effect * AMBIGUOUS_SEVERITY`` times its class's lowest severity: at 3.0 above the top of every
  class's severity range (``render._SEVERITY_HIGH``), so findings as conspicuous as labelled ones that
  the report missed, the label noise a reader notices. Without it, a flipped image shows only what its
  true labels (and ``label_noise``) say.
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
differently: several unlabelled findings (``ambiguity``) or opacity-like texture (``mottle``).
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

from cxrprune.core.classes import nih_train_prevalence
from cxrprune.core.config import MECHANISMS
from cxrprune.datasets.synth.labels import FINDING_INDICES

AMBIGUOUS_FINDINGS = 5  # unlabelled findings an ambiguous (flipped) image shows
AMBIGUOUS_SEVERITY = 3.0  # their strength at effect 1, in multiples of each class's lowest severity
MOTTLE = 0.18  # mottle amplitude (image intensity, 0..1) of a degradation of severity 1 at effect 1
# Why these two values: chosen, like the earlier 1.5 and 0.12, with benchmarks/pie_routes.py on the
# fixed networks of the calibration's none-1 (synthetic.seed 1, never a planted draw). With the four
# PIE routes drawn together, 1.5 and 0.12 left degraded images little of the lift in PIE rate that
# mottle alone gives them, and the PIE-routes arm reproduced the reader findings in 1, 2 and 3 of 5
# draws (commit b44019b); 3.0 and 0.18 give flipped and degraded images a similar lift when drawn
# together (README, Calibration). Neither constant draws anything when its route is off.


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


def class_extent(frequency_effect: float) -> list[float] | None:
    """Per-finding extent of the ``frequency`` route, ``effect * (2 * rarity - 1)`` in [-1, 1]
    (``None`` when the route is off, so the unplanted generator reshapes nothing and stays
    byte-identical)."""
    if frequency_effect <= 0.0:
        return None
    return (frequency_effect * (2.0 * rarity() - 1.0)).tolist()


def ambiguous_findings(true_labels: np.ndarray, flipped: int, rng: np.random.Generator) -> list[int]:
    """The finding positions (canonical finding order) an ambiguous image shows without any label
    naming them: ``AMBIGUOUS_FINDINGS`` drawn uniformly from the findings its true labels lack,
    other than the ``flipped`` class (whose drawing is the ``label_noise`` route's)."""
    absent = [j for j, c in enumerate(FINDING_INDICES) if not true_labels[c] and c != flipped]
    picks = rng.choice(len(absent), size=min(AMBIGUOUS_FINDINGS, len(absent)), replace=False)
    return sorted(absent[i] for i in picks)
