"""The paper's findings, this run's value of each, and a verdict from fixed rules.

The published values below are copied from Holste et al., MICCAI 2023 ("How does pruning
impact long-tailed multi-label medical image classifiers?") and its poster, for NIH-CXR-LT
(the poster's summary lines where the paper gives no number); they are constants of the
product, never read from anywhere at run time.

Every measured number comes from the pipeline's metrics: ``summary.json`` (analyze),
``evaluate.json`` (evaluate) and ``reader.json`` (reader-analyze), through
:func:`measure`. :func:`verdict` applies the rules:

- ``not measured``: the statistic is undefined (e.g. no ground truth for label noise);
- significance: ``p < alpha`` where a p-value exists AND the confidence interval excludes
  the null value where an interval exists (both must hold when both exist);
- ``reproduced``: on the paper's side of the null and significant;
- ``same direction, not significant``: on the paper's side, not significant;
- ``opposite``: on the other side and significant (for a one-sided p in the paper's
  direction, which cannot show the other side, the interval alone decides);
- ``not reproduced``: on the other side (or at the null), not significant.

The safe-sparsity finding is a threshold, not a direction: ``reproduced`` when the largest
safe sparsity is at least the paper's 65% minus one level step (5%), ``not reproduced``
when lower, ``not measured`` when the paired test could not reach significance at all
(too few seeds: ``evaluate.json`` says so in ``note``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

REPRODUCED = "reproduced"
SAME_DIRECTION = "same direction, not significant"
NOT_REPRODUCED = "not reproduced"
OPPOSITE = "opposite"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, SAME_DIRECTION, NOT_REPRODUCED, OPPOSITE, NOT_MEASURED)

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


CLAIMS: tuple[Claim, ...] = (
    Claim("safe_sparsity", "Up to 65% of weights can be pruned with no significant mAP loss",
          "65% (poster, NIH-CXR-LT, ResNet50)", "largest sparsity with no significant mAP drop (paired test)", 0, 0.0),
    Claim("rare_forgotten_earlier", "Rare classes are forgotten earlier",
          "first 20% drop vs ln(train count): r=0.64, rho=0.61", "Spearman rho, first drop vs ln(train count)",
          +1, 0.0),
    Claim("rare_forgotten_more", "Rare classes are forgotten more at 95% sparsity",
          "dAP@95 vs ln(train count): r=0.80, rho=0.75", "Spearman rho, dAP@95 vs ln(train count)", +1, 0.0),
    Claim("fcd_frequency", "Classes of different frequency have dissimilar forgettability curves",
          "FCD vs |d ln f|: r=0.71, rho=0.64", "Spearman rho, FCD vs |d ln f|", +1, 0.0),
    Claim("fcd_cooccurrence", "Co-occurring classes have similar forgettability curves",
          "FCD vs IoU^(1/4): r=-0.43, rho=-0.47", "Spearman rho, FCD vs IoU^(1/4)", -1, 0.0),
    Claim("pie_rare", "PIEs are enriched for rare classes",
          "rare classes 3-15x over-represented among PIEs (poster)",
          "Spearman rho, ln(PIE prevalence ratio) vs ln(train count)", -1, 0.0),
    Claim("pie_3plus", "PIEs are enriched for images with 3+ findings",
          "~2x (poster)", "PIE / non-PIE ratio of images with 3+ findings", +1, 1.0),
    Claim("pie_label_noise", "PIEs carry more label noise",
          "more label noise (reader study)", "PIE / non-PIE ratio of flipped labels (synthetic ground truth)",
          +1, 1.0),
    Claim("pie_low_quality", "PIEs have lower image quality",
          "lower quality (reader study)", "mean quality, PIE minus non-PIE (synthetic ground truth)", -1, 0.0),
    Claim("reader_label_noise", "Readers agree less with PIEs' labels",
          "more label noise (reader study)", "share agreeing with the label, PIE minus non-PIE", -1, 0.0),
    Claim("reader_quality", "Readers rate PIEs' image quality lower",
          "lower quality (reader study)", "mean quality rating (1-5), PIE minus non-PIE", -1, 0.0),
    Claim("reader_difficulty", "Readers rate PIEs harder to diagnose",
          "higher difficulty (reader study)", "mean difficulty rating (1-5), PIE minus non-PIE", +1, 0.0),
)


@dataclass
class Measurement:
    """This run's value of one claim: value, interval, p-value and where they come from."""

    value: float | None
    ci: list[float | None] | None = None
    p: float | None = None
    source: str = ""  # e.g. "summary.json: fcd.iou_rho"
    extra: dict[str, Any] = field(default_factory=dict)
    one_sided: bool = False  # p tests the paper's direction only: it says nothing about the other side


@dataclass
class Finding:
    claim: Claim
    measured: Measurement
    verdict: str


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def significant(m: Measurement, null: float, alpha: float) -> bool:
    """p < alpha where a p-value exists and the interval excludes ``null`` where one exists."""
    p_ok = m.p is None or m.p < alpha
    ci_ok = True
    if m.ci is not None and m.ci[0] is not None and m.ci[1] is not None:
        ci_ok = not (m.ci[0] <= null <= m.ci[1])
    has_evidence = m.p is not None or (m.ci is not None and None not in m.ci)
    return has_evidence and p_ok and ci_ok


def verdict(claim: Claim, m: Measurement, alpha: float) -> str:
    """The fixed rules of the module docstring."""
    if m.value is None:
        return NOT_MEASURED
    if claim.direction == 0:
        if m.extra.get("no_power"):
            return NOT_MEASURED
        return REPRODUCED if m.value >= SAFE_SPARSITY - SAFE_SPARSITY_STEP - 1e-9 else NOT_REPRODUCED
    side = claim.direction * (m.value - claim.null)
    sig = significant(m, claim.null, alpha)
    if side > 0:
        return REPRODUCED if sig else SAME_DIRECTION
    if side < 0 and m.one_sided:
        # A one-sided p in the paper's direction is large on the other side by construction:
        # there the interval alone decides.
        sig = significant(Measurement(m.value, m.ci, None), claim.null, alpha)
    if side < 0 and sig:
        return OPPOSITE
    return NOT_REPRODUCED


def measure(summary: dict, evaluation: dict, reader: dict | None) -> dict[str, Measurement]:
    """This run's measurement of every claim, read from the stages' metrics files."""
    f, c, pie = summary.get("forgettability", {}), summary.get("fcd", {}), summary.get("pie", {})
    out: dict[str, Measurement] = {}
    safe_p = next((row.get("p_adj") for row in evaluation.get("paired_tests", [])
                   if _num(row.get("sparsity")) is not None and abs(row["sparsity"] - SAFE_SPARSITY) < 1e-6), None)
    out["safe_sparsity"] = Measurement(
        _num(evaluation.get("max_safe_sparsity")), None, _num(safe_p), "evaluate.json: max_safe_sparsity",
        {"no_power": evaluation.get("note") is not None and "no level can be significant" in str(evaluation.get("note")),
         "p_note": "Holm-adjusted p of the paired test at 65%"})
    for key, section, name, src in (("rare_forgotten_earlier", f, "first_drop", "forgettability"),
                                    ("rare_forgotten_more", f, "dap95", "forgettability"),
                                    ("fcd_frequency", c, "freq", "fcd"), ("fcd_cooccurrence", c, "iou", "fcd")):
        out[key] = Measurement(_num(section.get(f"{name}_rho")), section.get(f"{name}_rho_ci"),
                               _num(section.get(f"{name}_rho_p")), f"summary.json: {src}.{name}_rho",
                               {"r": _num(section.get(f"{name}_r")), "r_ci": section.get(f"{name}_r_ci"),
                                "r_p": _num(section.get(f"{name}_p"))})
    out["pie_rare"] = Measurement(_num(pie.get("class_ratio_vs_frequency_rho")),
                                  pie.get("class_ratio_vs_frequency_rho_ci"),
                                  _num(pie.get("class_ratio_vs_frequency_rho_p")),
                                  "summary.json: pie.class_ratio_vs_frequency_rho")
    # The PIE p-values are one-sided in the paper's direction (analysis/pies.py).
    out["pie_3plus"] = Measurement(_num(pie.get("ratio_3plus_findings")), pie.get("ratio_3plus_findings_ci"),
                                   _num(pie.get("ratio_3plus_p")), "summary.json: pie.ratio_3plus_findings",
                                   one_sided=True)
    out["pie_label_noise"] = Measurement(_num(pie.get("ratio_flipped_label")), pie.get("ratio_flipped_label_ci"),
                                         _num(pie.get("flipped_p")), "summary.json: pie.ratio_flipped_label",
                                         one_sided=True)
    out["pie_low_quality"] = Measurement(_num(pie.get("quality_difference")), pie.get("quality_difference_ci"),
                                         _num(pie.get("quality_p")), "summary.json: pie.quality_difference",
                                         one_sided=True)
    pooled = (reader or {}).get("pooled", {})
    for key, question in (("reader_label_noise", "agree"), ("reader_quality", "quality"),
                          ("reader_difficulty", "difficulty")):
        q = pooled.get(question, {})
        pie_mean, non_mean = _num(q.get("pie_mean")), _num(q.get("non_pie_mean"))
        value = pie_mean - non_mean if pie_mean is not None and non_mean is not None else None
        out[key] = Measurement(value, None, _num(q.get("kruskal_p")), f"reader.json: pooled.{question}",
                               {"pie_mean": pie_mean, "non_pie_mean": non_mean})
    return out


def assess(summary: dict, evaluation: dict, reader: dict | None, alpha: float) -> list[Finding]:
    """Every claim with this run's measurement and its verdict, in the paper's order."""
    measured = measure(summary, evaluation, reader)
    return [Finding(claim, measured[claim.key], verdict(claim, measured[claim.key], alpha)) for claim in CLAIMS]
