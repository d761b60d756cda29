"""Findings x experiments: every experiment's verdicts and intervals side by side.

The source is ``dvc exp show --json``: each experiment's ``reports/<name>/findings.json``
(the report stage's DVC metric) and its ``params.yaml``, read from the experiment's own
commit. DVC rather than the MLflow store because DVC is where an experiment is defined
(the params that differ: ``train.arch``, ``prune.methods``, ``data.name``,
``synthetic.seed``), it holds the verdicts as they were computed for that commit, and it
needs no tracking server (users often work offline; the MLflow store may be shared by
other projects or absent on a machine that only has the git history).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrprune.analysis.findings import (
    CLAIMS,
    NOT_ESTIMABLE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    OPPOSITE,
    REPRODUCED,
    SAME_DIRECTION,
    finite_number,
)
from cxrprune.analysis.report import fmt_p, fmt_value

# What tells experiments apart, in the order shown (params.yaml keys).
AXES = ("train.arch", "prune.methods", "data.name", "synthetic.seed", "train.pretrained", "seeds")
SYMBOL = {REPRODUCED: "✅", SAME_DIRECTION: "➖", NOT_REPRODUCED: "❌", OPPOSITE: "⛔", NOT_ESTIMABLE: "❔",
          NOT_MEASURED: "·"}
COLOR = {REPRODUCED: "#2e7d32", SAME_DIRECTION: "#a5d6a7", NOT_REPRODUCED: "#ef9a9a", OPPOSITE: "#c62828",
         NOT_ESTIMABLE: "#fff59d", NOT_MEASURED: "#e0e0e0"}
CELLS = "Cells: verdict symbol, then this run's value [95% CI] and its Holm-adjusted p (`p_holm`)."


@dataclass
class Experiment:
    name: str
    rev: str
    params: dict[str, Any]
    findings: dict[str, Any]  # findings.json
    axes: dict[str, str] = field(default_factory=dict)


def _dig(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _states(entries: list[dict]) -> Iterator[tuple[str, dict]]:
    """(display name, ExpState) of every baseline, the workspace and every experiment."""
    for top in entries:
        rev = str(top.get("rev") or "")
        yield (rev if rev == "workspace" else (top.get("name") or rev[:7])), top
        for rng in top.get("experiments") or []:
            revs = rng.get("revs") or []
            if revs:  # the first rev is the experiment's result
                yield (rng.get("name") or revs[0].get("name") or str(revs[0].get("rev", ""))[:7]), revs[0]


def collect(entries: list[dict]) -> tuple[list[Experiment], list[str]]:
    """Experiments holding a findings report, and a note for each one without."""
    found, skipped = [], []
    for name, state in _states(entries):
        data = state.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        reports = {path: (res or {}).get("data") for path, res in (data.get("metrics") or {}).items()
                   if path.startswith("reports/") and path.endswith("/findings.json")}
        doc = next((d for d in reports.values() if isinstance(d, dict) and "findings" in d), None)
        if doc is None:
            skipped.append(f"{name}: no reports/<name>/findings.json (run `dvc exp run` or `dvc repro` "
                           f"with the report stage)")
            continue
        exp = Experiment(name, str(state.get("rev", "")), params, doc)
        for axis in AXES:
            value = _dig(params, axis)
            if axis == "seeds" and isinstance(value, list):
                value = len(value)
            if axis == "prune.methods" and isinstance(value, list):
                value = "+".join(map(str, value))
            if axis == "synthetic.seed" and not doc.get("calibration"):
                value = None  # not a synthetic run: the generator seed means nothing
            exp.axes[axis] = "" if value is None else str(value)
        found.append(exp)
    return _without_unchanged_workspace(found), skipped


def _without_unchanged_workspace(found: list[Experiment]) -> list[Experiment]:
    """Drop the workspace when it holds a commit's results unchanged (after ``dvc repro`` of a
    clean checkout): shown twice, the same run would count twice in "reproduced"."""
    work = next((e for e in found if e.rev == "workspace"), None)
    if work is not None and any(e is not work and e.params == work.params and e.findings == work.findings
                                for e in found):
        found = [e for e in found if e is not work]
    return found


def render(experiments: list[Experiment], skipped: list[str], figure: Path | None) -> str:
    lines = ["# Findings across experiments", "",
             "Source: `dvc exp show --json` (each experiment's `reports/<name>/findings.json` and params). "
             f"{CELLS} " + ", ".join(f"{s} {v}" for v, s in SYMBOL.items()) + ".", ""]
    if any(e.findings.get("calibration") for e in experiments):
        lines += [("> Runs on the embedded synthetic data are **calibration, not replication**: the generator was "
                   "tuned until findings appeared. A verdict that survives other `synthetic.seed` values is robust "
                   "to the draw of the data, not evidence for the paper."), ""]
    head = ["finding"] + [f"`{e.name}`" for e in experiments] + ["reproduced"]
    lines += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for axis in AXES:
        lines.append("| " + " | ".join([f"*{axis}*"] + [e.axes.get(axis, "") or "-" for e in experiments] + [""]) + " |")
    for claim in CLAIMS:
        cells, n_rep, n_measured = [], 0, 0
        for e in experiments:
            f = (e.findings.get("findings") or {}).get(claim.key) or {}
            verdict = f.get("verdict", NOT_MEASURED)
            n_rep += verdict == REPRODUCED
            n_measured += verdict != NOT_MEASURED
            value = fmt_value(finite_number(f.get("value")), [f.get("ci_lo"), f.get("ci_hi")])
            cell = f"{SYMBOL.get(verdict, '?')} {value}"
            p_holm = finite_number(f.get("p_holm"))  # absent in reports older than the adjustment
            cells.append(cell if p_holm is None else f"{cell}, p_holm {fmt_p(p_holm)}")
        lines.append("| " + " | ".join([claim.title] + cells + [f"{n_rep}/{n_measured}"]) + " |")
    if figure is not None:
        lines += ["", f"![verdicts]({figure.name})"]
    if skipped:
        lines += ["", "Not shown (no findings report): " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def plot(experiments: list[Experiment], path: Path) -> None:
    """Findings x experiments, each cell coloured by verdict and labelled with the value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    rows, cols = len(CLAIMS), len(experiments)
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * cols, 0.45 * rows + 1.6))
    grid = [[to_rgb(COLOR[NOT_MEASURED])] * cols for _ in range(rows)]
    for j, e in enumerate(experiments):
        for i, claim in enumerate(CLAIMS):
            f = (e.findings.get("findings") or {}).get(claim.key) or {}
            verdict = f.get("verdict", NOT_MEASURED)
            grid[i][j] = to_rgb(COLOR.get(verdict, COLOR[NOT_MEASURED]))
            value = finite_number(f.get("value"))
            if value is not None:
                ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7)
    ax.imshow(grid, aspect="auto")
    ax.set_yticks(range(rows), [c.title for c in CLAIMS], fontsize=7)
    labels = [e.name + "\n" + " ".join(v for k, v in e.axes.items() if v and k != "seeds") for e in experiments]
    ax.set_xticks(range(cols), labels, fontsize=7, rotation=30, ha="right")
    ax.legend(handles=[Patch(color=c, label=v) for v, c in COLOR.items()], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title("Findings of the paper across experiments", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
