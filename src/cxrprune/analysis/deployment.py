"""The deployer's page: per compression method, how far it can go, what that costs each
disease, and what it buys in bytes and milliseconds (``reports/<name>/deployment.md``,
``deployment.json`` and ``deployment.png``).

Everything here is read from the analyze stage's outputs, nothing is recomputed: the operating
points and the classes not shown non-inferior (:mod:`cxrprune.analysis.operating_points`,
``summary.json``), each class's median relative AP change per (method, level)
(``class_loss_tests.csv``), bytes and latency of the produced artifacts (``efficiency.csv``)
and the training counts that order the classes rare first (``forgettability.csv``).

A class "loses more than the tolerance" at a level when its median relative AP change over
the seeds is below ``-analyze.class_tolerance``: what a deployer sees. Whether a level is
*shown* safe is the operating point's non-inferiority test, which needs at least 3 seeds; with
one imported model that column says why it is not measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm

from cxrprune.analysis.figures import styled_figure
from cxrprune.analysis.forgetting import round_levels
from cxrprune.core.atomic import write_json, write_text
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer
from cxrprune.core.layout import Layout

DENSE_ROW = ("dense", 0.0)  # the efficiency table's unpruned fp32 model: the reference of bytes and latency


@dataclass
class Deployment:
    tolerance: float
    classes: list[str]  # rare first
    losses: pd.DataFrame  # method, level, class_name, median_rel_dap, loses, shown
    methods: list[dict[str, Any]]  # one row per method: operating point, bytes, latency, mAP
    counts: dict[str, int]  # training positives per class
    levels: list[dict[str, Any]]  # one row per (method, level): bytes, latency, mAP, diseases losing

    def changes(self) -> dict[tuple[str, str], float]:
        """The median change at each (method, class)'s first losing level."""
        # One pass over the table into a dict (the first row of each key, as a filter's iloc[0]
        # would take): a boolean filter per pair took seconds on the default's table.
        median: dict[tuple[str, str, float], float] = {}
        for m, c, level, v in zip(self.losses["method"].astype(str), self.losses["class_name"].astype(str),
                                  self.losses["level"], self.losses["median_rel_dap"]):
            median.setdefault((m, c, float(level)), float(v))
        return {(m, c): median[(m, c, level)] for (m, c), level in first_losing_levels(self).items()}


def first_losing_levels(d: Deployment) -> dict[tuple[str, str], float]:
    """(method, class) -> the lowest level where the class loses more than the tolerance."""
    losing = d.losses[d.losses["loses"]].sort_values("level")
    return {(str(m), str(c)): float(g["level"].iloc[0]) for (m, c), g in losing.groupby(["method", "class_name"])}


def build(summary: dict, class_tests: pd.DataFrame, efficiency: pd.DataFrame, forgettability: pd.DataFrame
          ) -> Deployment:
    """The page's tables from the analyze stage's outputs (module docstring)."""
    need = {"method", "level", "class_name", "median_rel_dap", "noninferior", "ni_tested"}
    if not need <= set(class_tests.columns):
        raise DataError(f"class_loss_tests.csv lacks {sorted(need - set(class_tests.columns))}; "
                        f"rerun `dvc repro {producer('summary')}`")
    rule = summary.get("operating_point_rule") or {}
    tolerance = float(rule.get("class_tolerance", math.nan))
    order = forgettability.sort_values(["train_count", "class_name"])["class_name"].astype(str).tolist()
    losses = class_tests.assign(level=round_levels(class_tests["level"]))[
        ["method", "level", "class_name", "median_rel_dap", "noninferior", "ni_tested"]].copy()
    losses["loses"] = losses["median_rel_dap"] < -tolerance
    losses["shown"] = losses["noninferior"].astype(bool) & losses["ni_tested"].astype(bool)
    losses["tested"] = losses["ni_tested"].astype(bool)
    losses = losses.drop(columns=["noninferior", "ni_tested"])
    eff = _efficiency(efficiency)
    dense = eff.get(DENSE_ROW, {})
    points = summary.get("operating_points") or {}
    rows = []
    for method in dict.fromkeys(losses["method"].astype(str)):
        point = points.get(method) or {}
        level = point.get("operating_point")
        levels = sorted(set(losses.loc[losses["method"] == method, "level"]))
        # The artifact the row describes: the operating point's, or a one-level method's only one.
        at = level if level is not None else (levels[0] if len(levels) == 1 else None)
        cost = eff.get((method, round(float(at), 6)), {}) if at is not None else {}
        first = point.get("first_level_not_shown")
        at_first = [c for c in order if first is not None and c in _losing(losses, method, first)]
        rows.append({
            "method": method, "operating_point": level, "costed_level": at, "first_level_not_shown": first,
            "classes_losing_at_first_level_not_shown": at_first,
            "bytes": cost.get("bytes"), "bytes_vs_dense": _ratio(cost.get("bytes"), dense.get("bytes")),
            "latency_ms_b1": cost.get("latency_ms_b1"), "latency_ratio": cost.get("latency_ratio"),
            "latency_ratio_ci": cost.get("latency_ratio_ci"),
            "map": cost.get("map"), "note": point.get("note") or rule.get("note"),
        })
    counts = dict(zip(forgettability["class_name"].astype(str), forgettability["train_count"].astype(int)))
    per_level = []
    for (method, level), g in losses.groupby(["method", "level"], sort=False):
        cost = eff.get((str(method), float(level)), {})
        per_level.append({"method": str(method), "level": float(level), "bytes": cost.get("bytes"),
                          "bytes_vs_dense": _ratio(cost.get("bytes"), dense.get("bytes")),
                          "latency_ms_b1": cost.get("latency_ms_b1"), "latency_ratio": cost.get("latency_ratio"),
                          "latency_ratio_ci": cost.get("latency_ratio_ci"), "map": cost.get("map"),
                          "diseases_losing": int(g["loses"].sum()), "diseases_shown": int(g["shown"].sum()),
                          "tested": bool(g["tested"].any()),
                          "diseases": int(len(g))})
    return Deployment(tolerance, order, losses, rows, counts, per_level)


def _efficiency(efficiency: pd.DataFrame) -> dict[tuple[str, float], dict[str, Any]]:
    """Bytes and mAP averaged over seeds; latency and its interleaved ratio to the dense model
    from the seed that was timed (the first)."""
    if efficiency.empty:
        return {}
    eff = efficiency.assign(level=round_levels(efficiency["level"]))
    out = {}
    for (method, level), g in eff.groupby(["method", "level"], sort=False):
        timed = g.dropna(subset=["latency_ms_b1"])
        t = timed.iloc[0] if len(timed) else None
        out[(str(method), float(level))] = {
            "bytes": float(g["bytes"].mean()), "map": float(g["map"].mean()),
            "latency_ms_b1": None if t is None else float(t["latency_ms_b1"]),
            "latency_ratio": None if t is None else _finite(t["latency_ratio"]),
            "latency_ratio_ci": None if t is None else [_finite(t["latency_ratio_lo"]), _finite(t["latency_ratio_hi"])]}
    return out


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _losing(losses: pd.DataFrame, method: str, level: float) -> set[str]:
    at = losses[(losses["method"] == method) & (losses["level"] == round(float(level), 6)) & losses["loses"]]
    return set(at["class_name"].astype(str))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b and math.isfinite(a) and math.isfinite(b) else None


def document(d: Deployment) -> dict[str, Any]:
    """``deployment.json``: the page's numbers, machine-readable."""
    return {"class_tolerance": d.tolerance, "classes_rare_first": d.classes, "train_counts": d.counts,
            "methods": d.methods, "levels": d.levels,
            "losses": [{"method": r.method, "level": float(r.level), "class_name": r.class_name,
                        "median_rel_dap": None if not np.isfinite(r.median_rel_dap) else float(r.median_rel_dap),
                        "loses": bool(r.loses), "shown": bool(r.shown), "tested": bool(r.tested)}
                       for r in d.losses.itertuples(index=False)]}


def render(d: Deployment, name: str, figure: str) -> str:
    """``deployment.md``."""
    tol = f"{d.tolerance:.0%}" if math.isfinite(d.tolerance) else "n/a"
    lines = [f"# Deployment report: `{name}`", "",
             f"For each compression method: the largest level at which every disease is *shown* to keep its AP "
             f"within {tol} (`analyze.class_tolerance`; non-inferiority over seeds, levels in sequence from the "
             f"lowest), what the artifact at that level costs, and which diseases lose more than {tol} (median "
             f"over seeds) at each level, rarest first.", "",
             "Bytes: the deployable file. Latency: batch 1, the median over rounds timed interleaved with the dense "
             "model, as a ratio to it with its 95% interval (sign test); 'same as dense' where the interval contains "
             "1.", "",
             *methods_table(d.methods), "", *export_commands(d.methods)]
    methods = list(dict.fromkeys(d.losses["method"].astype(str)))
    lines += ["", f"![per-disease AP change by level]({figure})", "",
              f"## Where each disease first loses more than {tol}", "",
              f"The lowest level at which the disease's median relative AP change is below -{tol} (a one-level "
              f"method: the change at its level); '-' where it never does. Rarest first, with its training "
              f"positives.", "",
              "| disease | train positives | " + " | ".join(methods) + " |",
              "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    first, changes = first_losing_levels(d), d.changes()
    for c in d.classes:
        cells = []
        for m in methods:
            level = first.get((m, c))
            cells.append("-" if level is None else f"{level:g}" + (f" ({changes[(m, c)]:+.0%})"
                                                                     if (m, c) in changes else ""))
        lines.append(f"| {c} | {d.counts.get(c, 'n/a')} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["## Every level: what it costs and how many diseases lose more than the tolerance", "",
              "| method | level | bytes (x dense) | latency, batch 1: ms (x dense [95% CI]) | mAP | diseases losing "
              f"> {tol} (median) | diseases shown non-inferior |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    sequenced = {r["method"] for r in d.levels if r["tested"]}  # methods whose levels the test reached
    for r in d.levels:
        lines.append(f"| {r['method']} | {r['level']:g} | {_num(r['bytes'], '{:,.0f}')} "
                     f"({_num(r['bytes_vs_dense'], '{:.2f}')}) | {latency_cell(r)} | {_num(r['map'], '{:.3f}')} | "
                     f"{r['diseases_losing']} of {r['diseases']} | "
                     + (f"{r['diseases_shown']} of {r['diseases']} |" if r["tested"] else
                        "not tested" + (" (fixed sequence: a lower level failed) |" if r["method"] in sequenced
                                        else " (see the operating point) |")))
    lines += ["", "## What this page cannot show", "",
              "- Latency is measured on this machine, one thread (`prune.efficiency_threads`), for the first seed's "
              "artifacts; the interval covers the timing noise of that run, not other machines or batch sizes.",
              "- A disease's median change is not a test: 'loses more than the tolerance' can be noise with few "
              "test positives; the operating point column is the tested claim.",
              "- With one model (`model.source: checkpoint`) nothing is tested across seeds: the operating point "
              "is not measured and the losses are that one model's.", ""]
    return "\n".join(lines)


def methods_table(methods: list[dict[str, Any]]) -> list[str]:
    """The page's first table, one row per method (``deployment.json``'s ``methods``; the
    README renders the committed default's from there)."""
    lines = ["| method | operating point | bytes (x dense) | latency, batch 1: ms (x dense [95% CI]) | mAP | first "
             "level not shown: diseases losing > tolerance there |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in methods:
        if m["operating_point"] is not None:
            point = f"{m['operating_point']:g}"
        else:
            point = ("not measured: " + str(m["note"])) if m["note"] else "none shown"
            if m["costed_level"] is not None:
                point += f" (cost at its level {m['costed_level']:g})"
        first = "-" if m["first_level_not_shown"] is None else \
            f"{m['first_level_not_shown']:g}: " + (", ".join(m["classes_losing_at_first_level_not_shown"]) or
                                                  "none by the median (not shown: the test lacked power)")
        lines.append(f"| {m['method']} | {point} | {_num(m['bytes'], '{:,.0f}')} ({_num(m['bytes_vs_dense'], '{:.2f}')})"
                     f" | {latency_cell(m)} | {_num(m['map'], '{:.3f}')} | {first} |")
    return lines


def export_commands(methods: list[dict[str, Any]]) -> list[str]:
    """How to make each method's artifact at its operating point (or the level it was costed
    at): ``cxrprune export``, which writes the file with a sidecar saying how to load it and
    checks its predictions against the study's."""
    lines = ["To make the artifact at a method's operating point (the first seed's model; `--seed` for another): "
             "the file and a `.json` sidecar saying how to load it, its test-set predictions checked against the "
             "ones this page was computed from.", ""]
    for m in methods:
        level = m["operating_point"] if m["operating_point"] is not None else m["costed_level"]
        if level is None:
            lines.append(f"- {m['method']}: no level to export (nothing shown or costed)")
        else:
            note = "" if m["operating_point"] is not None else " (no level shown safe: the level it was costed at)"
            lines.append(f"- {m['method']}: `cxrprune export --method {m['method']} --level {level:g}`{note}")
    return lines


def latency_cell(m: dict[str, Any]) -> str:
    """``8.69 (1.02 [0.97, 1.08], same as dense)``; n/a where nothing was timed."""
    if m["latency_ms_b1"] is None:
        return "n/a (not timed)"
    ratio, ci = m["latency_ratio"], m["latency_ratio_ci"] or [None, None]
    if ratio is None:
        return f"{m['latency_ms_b1']:.2f}"
    if ci[0] is None or ci[1] is None:
        return f"{m['latency_ms_b1']:.2f} ({ratio:.2f}, no interval)"
    verdict = "same as dense" if ci[0] <= 1.0 <= ci[1] else ("faster" if ci[1] < 1.0 else "slower")
    return f"{m['latency_ms_b1']:.2f} ({ratio:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], {verdict})"


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else fmt.format(x)


def plot(d: Deployment, path) -> None:
    """One heatmap per method with more than one level: diseases (rare at the top) x levels,
    colour the median relative AP change (diverging at 0, colour-blind-safe PuOr), a dot where
    the class loses more than the tolerance."""
    methods = [m for m, g in d.losses.groupby("method", sort=False) if g["level"].nunique() > 1]
    if not methods:
        methods = list(dict.fromkeys(d.losses["method"]))
    cmap = colormaps["PuOr"]
    norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
    with styled_figure(path, ncols=len(methods), width=3.6, height=0.22 * len(d.classes) + 1.4) as (fig, axes):
        image = None
        for ax, method in zip(axes, methods):
            g = d.losses[d.losses["method"] == method]
            grid = g.pivot(index="class_name", columns="level", values="median_rel_dap").reindex(d.classes)
            loses = g.pivot(index="class_name", columns="level", values="loses").reindex(d.classes)
            image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap=cmap, norm=norm, interpolation="none")
            rows, cols = np.nonzero(loses.fillna(False).to_numpy(dtype=bool))
            ax.scatter(cols, rows, s=7, c="white", marker="o", edgecolors="black", linewidths=0.5)
            ax.set_title(method)
            ax.set_xticks(range(len(grid.columns)), [f"{k:g}" for k in grid.columns], rotation=90)
            ax.set_yticks(range(len(d.classes)), d.classes if ax is axes[0] else [""] * len(d.classes))
            ax.grid(False)
            ax.set_xlabel("level")
        if image is not None:
            fig.colorbar(image, ax=axes, label="median relative AP change (dot: loses > tolerance)", shrink=0.8)


def write(layout: Layout, summary: dict, class_tests: pd.DataFrame, efficiency: pd.DataFrame,
          forgettability: pd.DataFrame) -> Deployment:
    """Build the page and write its three files atomically (figure, JSON, then the markdown)."""
    d = build(summary, class_tests, efficiency, forgettability)
    plot(d, layout.deployment_figure)
    write_json(layout.deployment_json, document(d))
    write_text(layout.deployment_md, render(d, layout.name, layout.deployment_figure.name))
    return d
