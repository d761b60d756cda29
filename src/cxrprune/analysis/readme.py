"""The README's operating-point table, rendered from committed outputs, never typed.

:func:`render` reads ``metrics/<name>/summary.json`` (``operating_points``,
``operating_point_rule``) and ``metrics/<name>/efficiency.csv`` (the dense model's measured
size and latency). ``benchmarks/readme_numbers.py`` (``make readme-numbers``), the one
renderer of every README numbers block, writes it into the ``operating-points`` block. Not
part of any stage.
"""

from __future__ import annotations

import numpy as np

from cxrprune.analysis.cost_accuracy import DENSE
from cxrprune.analysis.operating_points import markdown_table
from cxrprune.core import upstream
from cxrprune.core.errors import DataError
from cxrprune.core.layout import Layout, producer


def render(out: Layout) -> str:
    """The block: the dense reference line and the per-method table (paths relative to the
    current directory, the repository root)."""
    doc = upstream.read_json(out.summary)
    if "operating_points" not in doc:
        raise DataError(f"{out.summary}: no operating_points; rerun `dvc repro {producer('summary')}`")
    eff = upstream.read_csv(out.efficiency)
    dense = eff[eff["method"] == DENSE]
    lines = []
    if len(dense):
        latency = dense["latency_ms_b1"].dropna()
        lines.append(f"Dense fp32 model (`{out.efficiency}`): {np.median(dense['bytes']):,.0f} bytes, "
                     f"{np.median(dense['nonzero_params']):,.0f} non-zero parameters, "
                     f"{'n/a' if latency.empty else format(float(np.median(latency)), '.2f')} ms at batch 1 "
                     f"({dense['engine'].iloc[0]}, {int(dense['threads'].iloc[0])} thread(s)).")
        lines.append("")
    lines.append(markdown_table(doc["operating_points"], doc["operating_point_rule"]).rstrip("\n"))
    return "\n".join(lines) + "\n"
