"""The findings report: ``reports/<name>/findings.md`` (GitHub/GitLab markdown, figures
linked by relative path) and ``findings.json`` (the same rows, a DVC metric).

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
    SAFE_SPARSITY,
    SAFE_SPARSITY_STEP,
    Finding,
)
from cxrprune.core.layout import ANALYZE_FIGURES, Layout

HEADER = ["#", "finding", "paper", "this run: statistic", "value [95% CI]", "p", "verdict"]
CALIBRATION_NOTE = (
    "**Calibration, not replication.** This run uses the embedded synthetic dataset, whose generator "
    "was tuned until several of the paper's findings appeared. Agreement here shows the pipeline can "
    "detect the effects; it is not evidence that they hold. Rerun with other `synthetic.seed` values "
    "(`cxrprune compare`) to see which verdicts survive a new draw of the data, and on real data to test them.")


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


def render(findings: list[Finding], *, name: str, synthetic: bool, params: dict[str, Any], alpha: float,
           report_path: Path, layout: Layout) -> str:
    """The markdown of ``findings.md``."""
    lines = [f"# Findings of Holste et al. (MICCAI 2023) on `{name}`", ""]
    if synthetic:
        lines += [f"> {CALIBRATION_NOTE}", ""]
    lines += [(
        "Each row: the paper's value, this run's value with its 95% bootstrap interval (test images resampled; "
        "see `bootstrap` in params.yaml) and p-value, and a verdict from fixed rules "
        f"(`cxrprune.analysis.findings`): **reproduced** = the paper's direction and significant (p < {alpha:g} "
        "and the interval excludes the null); **same direction, not significant**; **opposite** = the other "
        "direction and significant; **not reproduced** = the other direction (or none), not significant; "
        f"**not measured** = no data for it here. The safe-sparsity row is reproduced when at least "
        f"{SAFE_SPARSITY - SAFE_SPARSITY_STEP:.0%} (one level below the paper's {SAFE_SPARSITY:.0%}) is safe."),
        "",
        "Run: " + ", ".join(f"`{k}={v}`" for k, v in params.items()),
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---" for _ in HEADER) + " |",
    ]
    for i, f in enumerate(findings, 1):
        m = f.measured
        if f.claim.key.startswith("reader_") and m.extra.get("pie_mean") is not None:
            stat = f"{f.claim.statistic} (PIE {fmt(m.extra['pie_mean'])}, non-PIE {fmt(m.extra['non_pie_mean'])})"
        elif "r" in m.extra:
            stat = f"{f.claim.statistic} (Pearson r {fmt_value(m.extra['r'], m.extra.get('r_ci'))})"
        else:
            stat = f.claim.statistic
        row = [str(i), f.claim.title, f.claim.paper, stat, fmt_value(m.value, m.ci), fmt_p(m.p), f"**{f.verdict}**"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += ["", "Sources: " + "; ".join(f"{i}: `{f.measured.source}`" for i, f in enumerate(findings, 1)), ""]
    lines += ["## Figures", ""]
    rel = Path(os.path.relpath(layout.figures, report_path.parent))
    for fig in ANALYZE_FIGURES:
        lines += [f"![{fig[:-4].replace('_', ' ')}]({(rel / fig).as_posix()})", ""]
    reader_fig = Path(os.path.relpath(layout.reader_figure, report_path.parent))
    lines += [f"![reader study]({reader_fig.as_posix()})", "", f"Paper: {CITATION}.", ""]
    return "\n".join(lines)


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
