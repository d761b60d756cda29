"""The README's operating-point table, rendered from committed outputs, never typed.

``python -m cxrprune.analysis.readme [--name synthetic] [README.md]`` (``make readme-numbers``)
reads ``metrics/<name>/summary.json`` (``operating_points``, ``operating_point_rule``) and
``metrics/<name>/efficiency.csv`` (the dense model's measured size and latency) and replaces
the text between the README's ``operating-points`` markers. Not part of any stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cxrprune.analysis.efficiency import DENSE
from cxrprune.analysis.operating_points import markdown_table
from cxrprune.core import upstream
from cxrprune.core.errors import CxrpruneError, DataError
from cxrprune.core.layout import Layout

BEGIN = "<!-- operating-points:begin (make readme-numbers writes this block from metrics/) -->"
END = "<!-- operating-points:end -->"


def render(out: Layout) -> str:
    """The block between the markers: the dense reference line and the per-method table."""
    doc = upstream.read_json(out.summary, "analyze")
    if "operating_points" not in doc:
        raise DataError(f"{out.summary}: no operating_points; rerun `dvc repro analyze`")
    eff = upstream.read_csv(out.efficiency, "analyze")
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
    return "\n".join(lines)


def update(readme: Path, block: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise DataError(f"{readme}: lacks the markers {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", default="README.md", type=Path)
    parser.add_argument("--name", default="synthetic", help="data.name of the run to render")
    args = parser.parse_args(argv)
    try:
        update(args.readme, render(Layout(args.name)))
    except CxrpruneError as exc:
        print(f"cxrprune: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
