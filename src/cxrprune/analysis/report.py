"""The findings report: ``reports/<name>/findings.md`` (GitHub/GitLab markdown, figures
linked by relative path, :func:`render`) and ``findings.json`` (the same rows, a DVC
metric, :func:`document`).

Numbers are printed with 3 significant digits (p-values in scientific notation below 1e-3)
and always as ``value [lo, hi]``; :func:`parse_table` reads the table back (the tests
compare it with ``summary.json``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cxrprune.analysis.findings import (
    CITATION,
    MULTIPLICITY,
    SAFE_SPARSITY,
    SAFE_SPARSITY_STEP,
    Finding,
    cannot_show,
)
from cxrprune.core.layout import ANALYZE_FIGURES, VALIDATION, Layout

HEADER = ["#", "finding", "paper", "this run: statistic", "value [95% CI]", "p", "p (Holm)", "verdict",
          "FPR / power (planted)", "cannot show"]
CALIBRATION_NOTE = (
    "**Calibration, not replication.** This run uses the embedded synthetic dataset. Its generator plants only "
    "the routes `synthetic.mechanisms` lists (section \"What the generator planted\" below); nothing else ties "
    "a class's frequency to its fragility beyond its fewer examples. So a verdict here is not evidence that the "
    "paper's effect holds, nor by itself that the pipeline detects it: each row's FPR / power column, measured "
    "on planted tables, says that. Rerun with other `synthetic.seed` values (`cxrprune compare`) to see which verdicts survive a new "
    "draw of the data, and on real data to test them.")


def fmt(x: float | None) -> str:
    """3 significant digits; ``n/a`` for a missing value."""
    if x is None:
        return "n/a"
    return f"{x:.3g}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3g}"


def fmt_value(value: float | None, ci: list | None) -> str:
    if ci is None or ci[0] is None or ci[1] is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def validation_cell(validation: dict[str, Any] | None, key: str) -> str:
    """The finding's measured rates on planted effects (``benchmarks/results/verdicts.json``,
    written by ``cxrprune validate``): the share of "reproduced" verdicts when nothing was
    planted (false-positive rate) and at each planted effect size (power)."""
    found = (validation or {}).get("findings", {}).get(key)
    if not found:
        return "not validated"
    by = found.get("by_effect", {})
    parts = []
    for effect, rates in sorted(by.items(), key=lambda kv: float(kv[0])):
        rate = (rates.get("reproduced") or {}).get("rate")
        if rate is None:
            continue
        parts.append(f"FPR {rate:.2f}" if float(effect) == 0 else f"{rate:.2f} at e={float(effect):g}")
    if not parts:
        return "not validated"
    return parts[0] if len(parts) == 1 else f"{parts[0]}; power {', '.join(parts[1:])}"


def stat_text(f: Finding) -> str:
    """The row's statistic with what it is read against (Pearson r, the partial test, the null
    of random PIEs, the group means and images of the reader study)."""
    m = f.measured
    if f.claim.key.startswith("reader_") and m.extra.get("pie_mean") is not None:
        images = (f", {m.extra['n_images_pie']} vs {m.extra['n_images_non_pie']} images"
                  if m.extra.get("n_images_pie") is not None else "")
        return (f"{f.claim.statistic} (per-image means: PIE {fmt(m.extra['pie_mean'])}, non-PIE "
                f"{fmt(m.extra['non_pie_mean'])}{images}; Mann-Whitney p)")
    parts = []
    if f.claim.key == "safe_sparsity":
        if m.extra.get("margin") is not None:
            parts.append(f"margin {fmt(m.extra['margin'])} relative mAP")
        if m.extra.get("mde_65") is not None:
            parts.append(f"MDE at 65% {fmt(m.extra['mde_65'])}")
        parts.append(f"the paper's rule, no significant drop: {fmt(m.extra.get('paper_rule'))}")
    if m.extra.get("level") is not None:
        parts.append(f"half-life level {m.extra['level']:.0%}")
    if m.extra.get("at95_rho") is not None:
        parts.append(f"at 95%: rho {fmt(m.extra['at95_rho'])}, p {fmt_p(m.extra.get('at95_p'))}")
    if "r" in m.extra:
        parts.append(f"Pearson r {fmt_value(m.extra['r'], m.extra.get('r_ci'))}")
    if m.extra.get("partial_rho") is not None:
        parts.append(f"given IoU^(1/4): partial rho {fmt(m.extra['partial_rho'])}, "
                     f"p {fmt_p(m.extra.get('partial_p'))}")
    if m.extra.get("noise_rho") is not None:
        parts.append(f"FCD vs the pair's curve noise: rho {fmt(m.extra['noise_rho'])}")
    if m.null is not None:
        parts.append(f"random PIEs give {fmt(m.null)} on average")
    if m.extra.get("n") is not None:
        parts.append(f"{m.extra['n']} classes")
    if "paper_rho" in m.extra:
        parts.append(f"the paper's statistic: rho {fmt_value(m.extra['paper_rho'], m.extra.get('paper_rho_ci'))}, "
                     f"p {fmt_p(m.extra.get('paper_rho_p'))}")
    return f"{f.claim.statistic} ({'; '.join(parts)})" if parts else f.claim.statistic


def planted_section(findings: list[Finding], mechanisms: list[str], effect: float) -> list[str]:
    """Which findings the synthetic generator planted in this run (``synthetic.mechanisms`` at
    ``synthetic.effect``), one row per finding, so a verdict reads against what was there."""
    if not mechanisms or effect <= 0:
        control = " (nothing planted: the negative control)"
    elif not any(set(f.claim.routes) & set(mechanisms) for f in findings):
        control = ": routes that plant none of the findings below, so for every one of them this run is a negative control"
    else:
        control = ""
    lines = ["## What the generator planted", "",
             f"`synthetic.mechanisms: [{', '.join(mechanisms)}]`, `synthetic.effect: {effect:g}`{control} "
             "(README, Calibration). A route draws the effect into the images; **reproduced** on a finding "
             "that nothing planted is a false positive or a side effect of the generator's other choices (rare "
             "classes have fewer training examples under every setting: the cause "
             "`studies/frequency-intervention` tests).", ""]
    # A list, not a table: parse_table reads the report's one table (compare's snapshots rely on it).
    for i, f in enumerate(findings, 1):
        routes = f.claim.routes
        on = [r for r in routes if r in mechanisms and effect > 0]
        planted = f"**planted** ({', '.join(on)}, effect {effect:g})" if on else "not planted"
        lines.append(f"{i}. {f.claim.title}: {planted}; its route{'s' if len(routes) > 1 else ''}: "
                     f"{', '.join(routes) or 'none in the generator'}")
    return lines + [""]


def render(findings: list[Finding], *, name: str, synthetic: bool, params: dict[str, Any], alpha: float,
           report_path: Path, layout: Layout, validation: dict[str, Any] | None = None,
           planted: tuple[list[str], float] | None = None) -> str:
    """The markdown of ``findings.md``; ``planted`` (synthetic data: its mechanisms and effect)
    adds the section that says, per finding, whether the generator planted it."""
    lines = [f"# Findings of Holste et al. (MICCAI 2023) on `{name}`", ""]
    if synthetic:
        lines += [f"> {CALIBRATION_NOTE}", ""]
    m = sum(f.measured.p_holm is not None for f in findings)
    lines += [(
        "Each row: the paper's value, this run's value with its 95% bootstrap interval (two-stage: test "
        "patients, or images without patient ids, and seeds resampled; see `bootstrap` in params.yaml), its p-value as the test gave it and Holm-adjusted over the "
        f"{m} directional findings that have one (family-wise error {alpha:g} across the report), and a verdict "
        "from fixed rules (`cxrprune.analysis.findings`): **reproduced** = the paper's direction and significant "
        f"(Holm p < {alpha:g} and the interval excludes the null); **same direction, not significant**; "
        "**opposite** = the other direction and the same test significant there (never from a one-sided p, "
        "which cannot show it); **not reproduced** = the other direction (or none), not shown significant; "
        "**not estimable** = the interval is a single point, so the data state no uncertainty; "
        f"**not measured** = no data for it here. The safe-sparsity row is reproduced when at least "
        f"{SAFE_SPARSITY - SAFE_SPARSITY_STEP:.0%} (one level below the paper's {SAFE_SPARSITY:.0%}) is shown "
        "non-inferior: its mAP loss is below `evaluate.margin`, tested in fixed sequence from the lowest level up "
        "(the paper's \"no significant drop\" is printed beside it for comparison: failing to show a loss is not "
        "showing safety); its p is that of L1 at 65% and decides nothing here."),
        "",
        "FPR / power (planted): how often this row's rules said **reproduced** on planted prediction tables "
        "run through the same evaluate/analyze/report code (`cxrprune validate`, "
        + (f"{validation['replicates']} replicates per effect size, `{VALIDATION}`): with nothing planted "
           "(false-positive rate) and at planted effect sizes e (power). A row whose FPR is well above "
           f"{alpha:g} cannot be read as evidence, whatever its verdict."
           if validation else f"`{VALIDATION}` absent: no row is validated).")
        + "",
        "",
        "Run: " + ", ".join(f"`{k}={v}`" for k, v in params.items()),
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---" for _ in HEADER) + " |",
    ]
    for i, f in enumerate(findings, 1):
        m = f.measured
        row = [str(i), f.claim.title, f.claim.paper, stat_text(f), fmt_value(m.value, m.ci), fmt_p(m.p),
               fmt_p(m.p_holm), f"**{f.verdict}**", validation_cell(validation, f.claim.key), cannot_show(f.claim, m)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += ["", "Sources: " + "; ".join(f"{i}: `{f.measured.source}`" for i, f in enumerate(findings, 1)), ""]
    if planted is not None:
        lines += planted_section(findings, *planted)
    lines += ["## Figures", ""]
    rel = Path(os.path.relpath(layout.figures, report_path.parent))
    for fig in ANALYZE_FIGURES:
        lines += [f"![{fig[:-4].replace('_', ' ')}]({(rel / fig).as_posix()})", ""]
    reader_fig = Path(os.path.relpath(layout.reader_figure, report_path.parent))
    lines += [f"![reader study]({reader_fig.as_posix()})", "", f"Paper: {CITATION}.", ""]
    return "\n".join(lines)


def document(findings: list[Finding], *, calibration: bool, alpha: float) -> dict[str, Any]:
    """``findings.json``: lean on purpose, since ``dvc exp show`` turns every leaf into a
    column (titles, sources and limits are in findings.md and in
    :mod:`cxrprune.analysis.findings`); the interval as two numbers, because
    ``dvc exp show --json`` leaves lists (and nulls) out of metrics. ``p`` is the test's own
    p-value, ``p_holm`` the adjusted one the verdict used (null outside the family)."""
    rows = {}
    for f in findings:
        lo, hi = f.measured.ci or [None, None]
        rows[f.claim.key] = {"verdict": f.verdict, "value": f.measured.value, "ci_lo": lo, "ci_hi": hi,
                             "p": f.measured.p, "p_holm": f.measured.p_holm}
    return {"calibration": calibration, "alpha": alpha,
            "multiplicity": {"method": MULTIPLICITY, "m": sum(f.measured.p_holm is not None for f in findings)},
            "findings": rows}


_NUM = r"(n/a|[-+0-9.e]+)"


def parse_value(cell: str) -> tuple[float | None, list[float | None] | None]:
    """``"0.61 [0.3, 0.8]"`` -> ``(0.61, [0.3, 0.8])``; ``"n/a"`` -> ``(None, None)``."""
    m = re.fullmatch(rf"\s*{_NUM}(?: \[{_NUM}, {_NUM}\])?\s*", cell)
    if not m:
        raise ValueError(f"not a value cell: {cell!r}")

    def num(s: str | None) -> float | None:
        return None if s is None or s == "n/a" else float(s)

    ci = None if m.group(2) is None else [num(m.group(2)), num(m.group(3))]
    return num(m.group(1)), ci


def parse_table(markdown: str) -> list[dict[str, str]]:
    """The findings table of a report as one dict per row (keys = :data:`HEADER`)."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("| ") or line.startswith(("| ---", "| #")):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(dict(zip(HEADER, cells, strict=True)))
    return rows
