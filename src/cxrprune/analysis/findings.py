"""The paper's findings, this run's value of each, and a verdict from fixed rules.

The published values below are copied from Holste et al., MICCAI 2023 ("How does pruning
impact long-tailed multi-label medical image classifiers?") and its poster, for NIH-CXR-LT
(the poster's summary lines where the paper gives no number); they are constants of the
product, never read from anywhere at run time.

Every measured number comes from the pipeline's metrics: ``summary.json`` (analyze),
``evaluate.json`` (evaluate) and ``reader.json`` (reader-analyze), through
:func:`measure`. :func:`assess` adjusts the p-values and :func:`verdict` applies the rules:

- ``not measured``: the statistic is undefined (e.g. no ground truth for label noise);
- ``not estimable``: the interval is a single point (e.g. [0, 0] when no PIE has a flipped
  label): the resamples never varied, so the data say nothing about the uncertainty, and
  neither the interval nor the p-value is evidence;
- multiplicity: the report tests twelve findings at once, so each p-value is Holm-adjusted
  (:func:`cxrprune.stats.multiplicity.holm`) over the family of directional findings that
  have one, and significance uses the adjusted p (family-wise error at ``alpha`` across the
  report). The safe-sparsity row is outside the family: its verdict is a threshold on the
  evaluate stage's non-inferiority test in fixed sequence (which controls its own error
  across levels), not a p-value of this report;
- significance: adjusted ``p < alpha`` where a p-value exists AND the confidence interval
  excludes the null value where an interval exists (both must hold when both exist);
- ``reproduced``: on the paper's side of the null and significant;
- ``same direction, not significant``: on the paper's side, not significant;
- ``opposite``: on the other side and the same test significant there: a two-sided p-value
  (or, without one, the two-sided interval). A one-sided p-value in the paper's direction
  cannot show the other side, so there the verdict is ``not reproduced``, whatever the
  interval (the interval is not the test the p-value is);
- ``not reproduced``: on the other side (or at the null), not significant.

The null is the claim's (0 for a correlation, 1 for a ratio) unless the measurement brings
its own: the rare-class enrichment rho is read against the mean rho of random PIEs.

The safe-sparsity finding is a threshold, not a direction: ``reproduced`` when the largest
sparsity shown non-inferior (mAP loss below ``evaluate.margin``) is at least the paper's 65%
minus one level step (5%), ``not reproduced`` when lower, ``not measured`` when the test
could not be done (fewer than 3 seeds: ``evaluate.json`` says so in ``noninferiority_note``).
The paper's own rule ("no significant drop") is printed beside it, never used for the verdict:
failing to show a loss is not showing safety.

The forgetting and FCD findings read chance-corrected statistics (retained AUROC above
chance, :mod:`cxrprune.analysis.chance_corrected`): the paper's relative AP change measures a
class's prevalence once the pruned model is at chance, and the planted-effect validation
(``cxrprune validate``) measured far more than 5% false positives for the paper's forms
(``benchmarks/results/verdicts-paper-statistics.txt``). The paper's statistic is printed beside each.

Each claim names what its measurement cannot show (:func:`cannot_show`), e.g. that a
one-sided test cannot show the opposite effect or that synthetic truth is not real data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrprune.stats.multiplicity import holm

REPRODUCED = "reproduced"
SAME_DIRECTION = "same direction, not significant"
NOT_REPRODUCED = "not reproduced"
OPPOSITE = "opposite"
NOT_ESTIMABLE = "not estimable"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, SAME_DIRECTION, NOT_REPRODUCED, OPPOSITE, NOT_ESTIMABLE, NOT_MEASURED)
MULTIPLICITY = "holm"

CITATION = ("Holste G, Jiang Z, Jaiswal A, et al. How does pruning impact long-tailed multi-label medical "
            "image classifiers? MICCAI 2023 (paper and poster; NIH-CXR-LT values)")
SAFE_SPARSITY = 0.65  # poster: "Up to 65% of weights can be pruned with no significant impact"
SAFE_SPARSITY_STEP = 0.05  # one level of the paper's grid


@dataclass(frozen=True)
class Claim:
    """One finding of the paper and how this run measures it."""

    key: str
    title: str
    paper: str  # the published value, as text
    statistic: str  # what "this run" reports
    direction: int  # +1: the paper's effect is above the null, -1: below, 0: a threshold finding
    null: float
    limits: str = ""  # what this run's measurement cannot show, where that is not obvious
    # The synthetic generator's routes that plant this effect (synthetic.mechanisms,
    # datasets/synth/mechanisms.py); () where none does, so "reproduced" there on synthetic data
    # is a false positive or a side effect of the generator's other choices. label_noise and
    # quality plant no finding: they make flipped and degraded images harder for the dense and
    # the pruned network alike, which does not make them PIEs (benchmarks/results/pie_routes.txt).
    routes: tuple[str, ...] = ()


_SYNTHETIC = "synthetic truth: says nothing about real images"
_READERS = "as good as the readers: simulated ones only echo the synthetic truth"
_ACROSS_CLASSES = "an association across classes, not that frequency causes it"

CLAIMS: tuple[Claim, ...] = (
    Claim("safe_sparsity", "Up to 65% of weights can be pruned with no significant mAP loss",
          "65% (poster, NIH-CXR-LT, ResNet50)",
          "largest L1 sparsity shown non-inferior: mAP loss below evaluate.margin (one-sided t over seeds, "
          "fixed sequence from the lowest level)", 0, 0.0,
          "safety only up to the stated margin; a loss smaller than the test's MDE can pass unseen"),
    Claim("rare_forgotten_earlier", "Rare classes are forgotten earlier",
          "first 20% drop vs ln(train count): r=0.64, rho=0.61",
          "Spearman rho, first level keeping < 80% of the dense AUROC above chance vs ln(train count), learned "
          "classes", +1, 0.0, _ACROSS_CLASSES + "; classes that never drop and classes never learned are left out",
          routes=("frequency",)),
    Claim("rare_forgotten_more", "Rare classes are forgotten more at high sparsity",
          "dAP@95 vs ln(train count): r=0.80, rho=0.75",
          "Spearman rho, retained AUROC above chance minus 1 vs ln(train count), learned classes, at the half-life "
          "level: the lowest level where the median learned class keeps at most half its lift (the paper: 95%)",
          +1, 0.0, _ACROSS_CLASSES + "; not read at the paper's 95%, where a pruned network can be at chance for "
          "every class (the 95% value is printed beside it); classes never learned are left out",
          routes=("frequency",)),
    Claim("fcd_frequency", "Classes of different frequency have dissimilar forgettability curves",
          "FCD vs |d ln f|: r=0.71, rho=0.64",
          "Spearman rho, FCD of retained-AUROC curves vs |d ln f|, learned classes (Mantel p)", +1, 0.0,
          "an association over class pairs; frequency and co-occurrence are entangled (partial test beside it); "
          "a pair's FCD also grows with its curves' seed-to-seed noise, largest for weakly learned classes (rho "
          "beside it)",
          routes=("frequency",)),
    Claim("fcd_cooccurrence", "Co-occurring classes have similar forgettability curves",
          "FCD vs IoU^(1/4): r=-0.43, rho=-0.47",
          "Spearman rho, FCD of retained-AUROC curves vs IoU^(1/4), learned classes (Mantel p)", -1, 0.0,
          "an association over class pairs, not a cause"),
    Claim("pie_rare", "PIEs are enriched for rare classes",
          "rare classes 3-15x over-represented among PIEs (poster)",
          "Spearman rho, smoothed PIE enrichment vs ln(train count), every class (flag-permutation p)", -1, 0.0,
          "a trend across classes, not which classes are enriched", routes=("frequency",)),
    Claim("pie_3plus", "PIEs are enriched for images with 3+ findings",
          "~2x (poster)", "PIE / non-PIE ratio of images with 3+ findings", +1, 1.0),
    Claim("pie_label_noise", "PIEs carry more label noise",
          "more label noise (reader study)", "PIE / non-PIE ratio of flipped labels (synthetic ground truth)",
          +1, 1.0, _SYNTHETIC, routes=("ambiguity",)),
    Claim("pie_low_quality", "PIEs have lower image quality",
          "lower quality (reader study)", "mean quality, PIE minus non-PIE (synthetic ground truth)", -1, 0.0,
          _SYNTHETIC, routes=("mottle",)),
    Claim("reader_label_noise", "Readers agree less with PIEs' labels",
          "more label noise (reader study)", "rank-biserial r of each image's share agreeing with the label, PIE vs "
          "non-PIE images", -1, 0.0, _READERS, routes=("ambiguity",)),
    Claim("reader_quality", "Readers rate PIEs' image quality lower",
          "lower quality (reader study)", "rank-biserial r of each image's mean quality rating (1-5), PIE vs non-PIE "
          "images", -1, 0.0, _READERS, routes=("mottle",)),
    Claim("reader_difficulty", "Readers rate PIEs harder to diagnose",
          "higher difficulty (reader study)", "rank-biserial r of each image's mean difficulty rating (1-5), PIE vs "
          "non-PIE images", +1, 0.0, _READERS, routes=("ambiguity", "mottle")),
)


@dataclass
class Measurement:
    """This run's value of one claim: value, interval, p-value and where they come from."""

    value: float | None
    ci: list[float | None] | None = None
    p: float | None = None  # as the test gave it
    source: str = ""  # e.g. "summary.json: fcd.iou_rho"
    extra: dict[str, Any] = field(default_factory=dict)
    one_sided: bool = False  # p tests the paper's direction only: it says nothing about the other side
    null: float | None = None  # the statistic's value by chance when it is not the claim's null
    p_holm: float | None = None  # p Holm-adjusted over the report's family (:func:`assess`); None outside it


@dataclass
class Finding:
    claim: Claim
    measured: Measurement
    verdict: str


def finite_number(x: Any) -> float | None:
    """``x`` as a float if it is a finite number (not a bool, None or NaN), else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _interval(m: Measurement) -> tuple[float, float] | None:
    """The interval when both ends are numbers."""
    if m.ci is None or len(m.ci) != 2 or finite_number(m.ci[0]) is None or finite_number(m.ci[1]) is None:
        return None
    return float(m.ci[0]), float(m.ci[1])


def degenerate(m: Measurement) -> bool:
    """The interval is one point: the resamples never varied (e.g. [0, 0] when no PIE has a
    flipped label), so it states no uncertainty at all."""
    ci = _interval(m)
    return ci is not None and ci[0] == ci[1]


def significant(m: Measurement, null: float, alpha: float) -> bool:
    """Adjusted p < alpha where a p-value exists and the interval excludes ``null`` where one
    exists. The adjusted p is ``p_holm`` (the raw p for a measurement outside the family)."""
    p = m.p_holm if m.p_holm is not None else m.p
    ci = _interval(m)
    p_ok = p is None or p < alpha
    ci_ok = ci is None or not (ci[0] <= null <= ci[1])
    return (p is not None or ci is not None) and p_ok and ci_ok


def verdict(claim: Claim, m: Measurement, alpha: float) -> str:
    """The fixed rules of the module docstring."""
    if m.value is None:
        return NOT_MEASURED
    if claim.direction == 0:
        if m.extra.get("no_power"):
            return NOT_MEASURED
        return REPRODUCED if m.value >= SAFE_SPARSITY - SAFE_SPARSITY_STEP - 1e-9 else NOT_REPRODUCED
    if degenerate(m):
        return NOT_ESTIMABLE
    null = claim.null if m.null is None else m.null
    side = claim.direction * (m.value - null)
    sig = significant(m, null, alpha)
    if side > 0:
        return REPRODUCED if sig else SAME_DIRECTION
    # A one-sided p in the paper's direction is large on the other side by construction: the
    # test that was done cannot show the opposite, and an interval is not that test.
    if side < 0 and sig and not m.one_sided:
        return OPPOSITE
    return NOT_REPRODUCED


def cannot_show(claim: Claim, m: Measurement) -> str:
    """What the row cannot show: the claim's limits and, for a one-sided p, the other side."""
    parts = [claim.limits] if claim.limits else []
    if m.one_sided and claim.direction != 0:
        parts.insert(0, "one-sided p: not the opposite effect")
    return "; ".join(parts)


def measure(summary: dict, evaluation: dict, reader: dict | None) -> dict[str, Measurement]:
    """This run's measurement of every claim, read from the stages' metrics files (raw p-values;
    :func:`assess` adds the adjusted ones)."""
    f, c, pie = summary.get("forgettability", {}), summary.get("fcd", {}), summary.get("pie", {})
    out: dict[str, Measurement] = {}
    num = finite_number
    # Non-inferiority in fixed sequence (analysis/evaluate.py): the p of L1 at 65% speaks only
    # if the sequence reached that level; the paper's "no significant drop" stays beside it.
    at_65 = next((row for row in evaluation.get("noninferiority", [])
                  if row.get("method") == "l1" and num(row.get("sparsity")) is not None
                  and abs(row["sparsity"] - SAFE_SPARSITY) < 1e-6 and row.get("tested")), {})
    ni_note = str(evaluation.get("noninferiority_note") or "")
    out["safe_sparsity"] = Measurement(
        num(evaluation.get("max_noninferior_sparsity")), None, num(at_65.get("p")),
        "evaluate.json: max_noninferior_sparsity",
        {"no_power": ni_note.startswith("non-inferiority not measured"), "margin": num(evaluation.get("margin")),
         "mde_65": num(at_65.get("mde")), "paper_rule": num(evaluation.get("max_safe_sparsity")),
         "p_note": "one-sided non-inferiority p of L1 at 65% (fixed sequence: no adjustment)"})
    # The verdicts read the chance-corrected statistics (retained AUROC above chance: at chance
    # the paper's relative AP change measures prevalence, analysis/chance_corrected.py); the
    # paper's statistic is printed beside each for comparison with the published value.
    for key, section, name, paper, src in (
            ("rare_forgotten_earlier", f, "first_drop_auroc", "first_drop", "forgettability"),
            ("rare_forgotten_more", f, "dauroc_half", "dap95", "forgettability"),
            ("fcd_frequency", c, "auroc_freq", "freq", "fcd"), ("fcd_cooccurrence", c, "auroc_iou", "iou", "fcd")):
        out[key] = Measurement(num(section.get(f"{name}_rho")), section.get(f"{name}_rho_ci"),
                               num(section.get(f"{name}_rho_p")), f"summary.json: {src}.{name}_rho",
                               {"r": num(section.get(f"{name}_r")), "r_ci": section.get(f"{name}_r_ci"),
                                "r_p": num(section.get(f"{name}_p")), "paper_rho": num(section.get(f"{paper}_rho")),
                                "paper_rho_ci": section.get(f"{paper}_rho_ci"),
                                "paper_rho_p": num(section.get(f"{paper}_rho_p")),
                                "n": section.get(f"{name}_n") if src == "forgettability"
                                else section.get("auroc_n_classes_used")})
    out["rare_forgotten_more"].extra.update(level=num(f.get("dauroc_half_level")), at95_rho=num(f.get("dauroc95_rho")),
                                            at95_p=num(f.get("dauroc95_rho_p")))
    out["fcd_frequency"].extra.update(partial_rho=num(c.get("auroc_freq_given_iou_rho")),
                                      partial_p=num(c.get("auroc_freq_given_iou_rho_p")))
    for key in ("fcd_frequency", "fcd_cooccurrence"):
        out[key].extra["noise_rho"] = num(c.get("auroc_noise_rho"))
    # One-sided flag-permutation p (rare classes enriched); rho is read against random PIEs' mean rho.
    out["pie_rare"] = Measurement(num(pie.get("class_enrichment_rho")), None, num(pie.get("class_enrichment_p")),
                                  "summary.json: pie.class_enrichment_rho", {}, one_sided=True,
                                  null=num(pie.get("class_enrichment_null_mean_rho")))
    # The PIE p-values are one-sided in the paper's direction (analysis/pies.py).
    out["pie_3plus"] = Measurement(num(pie.get("ratio_3plus_findings")), pie.get("ratio_3plus_findings_ci"),
                                   num(pie.get("ratio_3plus_p")), "summary.json: pie.ratio_3plus_findings",
                                   one_sided=True)
    out["pie_label_noise"] = Measurement(num(pie.get("ratio_flipped_label")), pie.get("ratio_flipped_label_ci"),
                                         num(pie.get("flipped_p")), "summary.json: pie.ratio_flipped_label",
                                         one_sided=True)
    out["pie_low_quality"] = Measurement(num(pie.get("quality_difference")), pie.get("quality_difference_ci"),
                                         num(pie.get("quality_p")), "summary.json: pie.quality_difference",
                                         one_sided=True)
    pooled = (reader or {}).get("pooled", {})
    for key, question in (("reader_label_noise", "agree"), ("reader_quality", "quality"),
                          ("reader_difficulty", "difficulty")):
        q = pooled.get(question, {})
        # The image is the unit (reader/stats.py): the value is the two-sided image-level test's own
        # effect size, so its sign is the side that test's p speaks for (a difference of rating means
        # can point the other way when some images were rated more often).
        out[key] = Measurement(num(q.get("rank_biserial")), None, num(q.get("p")),
                               f"reader.json: pooled.{question}.rank_biserial",
                               {"pie_mean": num(q.get("pie_image_mean")), "non_pie_mean": num(q.get("non_pie_image_mean")),
                                "n_images_pie": q.get("n_images_pie"), "n_images_non_pie": q.get("n_images_non_pie")})
    return out


def family(measured: dict[str, Measurement]) -> list[str]:
    """Keys of the findings in the multiplicity family: the directional ones with a p-value."""
    return [c.key for c in CLAIMS if c.direction != 0 and measured[c.key].p is not None]


def adjust(measured: dict[str, Measurement]) -> int:
    """Set ``p_holm`` of every finding in the :func:`family`; returns the family's size."""
    keys = family(measured)
    if keys:
        adjusted = holm(np.array([measured[k].p for k in keys], dtype=np.float64)).adjusted
        for k, p in zip(keys, adjusted, strict=True):
            measured[k].p_holm = p
    return len(keys)


def assess(summary: dict, evaluation: dict, reader: dict | None, alpha: float) -> list[Finding]:
    """Every claim with this run's measurement, its Holm-adjusted p and its verdict, in the paper's order."""
    measured = measure(summary, evaluation, reader)
    adjust(measured)
    return [Finding(claim, measured[claim.key], verdict(claim, measured[claim.key], alpha)) for claim in CLAIMS]
