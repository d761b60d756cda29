"""Publication-quality PNG figures of the analyses (matplotlib, Agg, no display needed).

Every function takes the tables the analyses produce and an output path, draws one figure
with the shared style below and writes it atomically, so a killed stage never leaves a
half-written PNG. Figures are built with :class:`matplotlib.figure.Figure` rather than
pyplot: PNGs are rendered by the Agg canvas without touching the process-wide backend, there
is no global figure registry and nothing to close.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from cxrprune.analysis.forgetting import Correlation
from cxrprune.core.atomic import atomic_path

DPI = 180
# One colour and one marker per compression method, told apart at a glance and by colour-blind
# readers: the Okabe & Ito (2008) colour-blind-safe palette, and a marker shape of its own so
# the methods stay apart in greyscale too (channel and l1 were two near-identical blues).
METHOD_STYLES = {"l1": ("#0072B2", "o"), "random": ("#D55E00", "X"), "channel": ("#009E73", "s"),
                 "int8": ("#CC79A7", "D"), "l1_layer": ("#E69F00", "^"), "l1_finetune": ("#56B4E9", "v"),
                 "fp16": ("#000000", "P"), "bf16": ("#999999", "*")}
METHOD_COLORS = {m: c for m, (c, _) in METHOD_STYLES.items()}
METHOD_LABELS = {"l1": "L1 (magnitude)", "random": "Random"}
# One colour per class, 20 classes apart (NIH-CXR-LT has 20): Kelly's 22 colours of maximum
# contrast without white and black. plots/templates/lines_by_class.json uses the same list in
# the same order (tests/test_plots_offline.py checks), so a class has one colour in the PNG
# and the interactive plot.
CLASS_PALETTE = ("#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#848482", "#008856",
                 "#e68fac", "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17",
                 "#8db600", "#654522", "#e25822", "#2b3d26")
CLASS_LINESTYLES = ("-", "--", ":", "-.")  # beyond 20 classes the colours repeat with another dash

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "savefig.bbox": "tight",
}


@contextlib.contextmanager
def styled_figure(path: str | os.PathLike, ncols: int = 1, width: float = 5.0,
            height: float = 3.6) -> Iterator[tuple[Figure, list]]:
    """A styled figure with ``ncols`` axes, saved atomically to ``path`` on exit."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width * ncols, height), layout="constrained")
        axes = list(np.atleast_1d(fig.subplots(1, ncols)))
        yield fig, axes
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    if p == 0:
        return "0"  # below double precision (scipy's exact tests return it)
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def corr_text(c: Correlation, p_name: str = "p") -> str:
    """``r=0.64 (p=0.003), rho=0.61 (p=0.005), n=20`` for titles; ``p_name`` says which test
    gave the p-values where it is not the textbook one."""
    return (f"r={_fmt(c.r)} ({p_name}={_fmt_p(c.p_r)}), \u03c1={_fmt(c.rho)} ({p_name}={_fmt_p(c.p_rho)}), "
            f"n={c.n}")


def map_vs_sparsity(map_df: pd.DataFrame, path: str | os.PathLike) -> None:
    """mAP vs sparsity per method: median over seeds with the interquartile band.

    ``map_df`` has ``level, method, map, map_q25, map_q75``.
    """
    with styled_figure(path) as (fig, (ax,)):
        for method, g in map_df.groupby("method", sort=False):
            g = g.sort_values("level")
            color = METHOD_COLORS.get(str(method))
            ax.fill_between(g["level"], g["map_q25"], g["map_q75"], color=color, alpha=0.2, linewidth=0)
            if "map_lo" in g.columns:  # bootstrap interval over test images
                for col in ("map_lo", "map_hi"):
                    ax.plot(g["level"], g[col], color=color, linestyle=":", linewidth=0.9)
            ax.plot(g["level"], g["map"], marker="o", markersize=3, color=color,
                    label=METHOD_LABELS.get(str(method), str(method)))
        ax.set_xlabel("Sparsity k (fraction of weights pruned)")
        ax.set_ylabel("mAP (median over seeds, IQR band)" + (
            "; dotted: 95% CI" if "map_lo" in map_df.columns else ""))
        ax.set_title("Test mAP vs sparsity")
        ax.set_xlim(0, 1)
        ax.legend(title="Pruning", loc="lower left")


def _class_styles(classes) -> dict[str, tuple[str, str]]:
    """(colour, line style) per class, in the given order: the order of the Vega plot's domain."""
    n = len(CLASS_PALETTE)
    return {str(c): (CLASS_PALETTE[i % n], CLASS_LINESTYLES[i // n % len(CLASS_LINESTYLES)])
            for i, c in enumerate(classes)}


def forgettability_curves(curves: pd.DataFrame, counts: pd.Series, path: str | os.PathLike,
                          threshold: float = 0.2, bands: pd.DataFrame | None = None) -> None:
    """One line per class (relative AP change vs k), one colour each, legend by frequency;
    ``bands`` (``level, class_name, rel_dap_lo, rel_dap_hi``) adds each class's bootstrap interval."""
    order = counts.reindex(curves.columns).sort_values(ascending=False, kind="stable").index
    styles = _class_styles(curves.columns)
    with styled_figure(path, width=7.0, height=4.2) as (fig, (ax,)):
        for c in order:
            color, linestyle = styles[str(c)]
            ax.plot(curves.index, curves[c], color=color, linestyle=linestyle, linewidth=1.2, marker="o",
                    markersize=2, label=f"{c} ({int(counts.get(c, 0))})")
            if bands is not None:
                b = bands[bands["class_name"] == c].sort_values("level")
                ax.fill_between(b["level"], b["rel_dap_lo"], b["rel_dap_hi"], color=color, alpha=0.08,
                                linewidth=0)
        ax.axhline(-threshold, color="0.3", linestyle="--", linewidth=0.8)
        ax.text(curves.index.min(), -threshold, f" {-threshold:.0%} drop", va="bottom", fontsize=7, color="0.3")
        ax.axhline(0, color="0.5", linewidth=0.6)
        ax.set_xlabel("Sparsity k")
        ax.set_ylabel("Relative change in AP (median over seeds)" + ("; bands: 95% CI" if bands is not None else ""))
        ax.set_title("Forgettability curves (L1 pruning)")
        # A figure-level legend outside the axes keeps 20 class names off the curves.
        fig.legend(*ax.get_legend_handles_labels(), title="Class (train count)", loc="outside right center",
                   frameon=False)


# Label offsets (points) tried in turn around each marker, nearest first.
_LABEL_SLOTS = [(dx, sy * dy) for dy in (3, 11) for sy in (1, -1) for dx in (4, -4)]


def _scatter(ax, x: np.ndarray, y: np.ndarray, color) -> None:
    ax.scatter(x, y, s=18, color=color, edgecolor="white", linewidth=0.5, zorder=3)


def _place_labels(ax, x: np.ndarray, y: np.ndarray, labels: list, numbers: list[int]) -> list[str]:
    """Name every point: the full name where it fits beside the marker, else a number with a key.

    Forgettability summaries sit on the 0.05 sparsity grid, so many classes share a y value
    and fixed offsets would print names on top of each other. Names are placed greedily where
    they overlap no marker and no earlier name; a point with no free slot gets its number
    instead (``numbers``, the same for a class in every panel); the returned ``"n: name"``
    entries are the key for the caller to print. Call this after every
    other decoration: it settles and then freezes the layout so that measured positions stay
    valid when the figure is saved (``bbox_inches="tight"`` grows the canvas to fit).
    """
    fig = ax.get_figure()
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)  # a renderer to measure text with
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    ok = np.isfinite(x) & np.isfinite(y)
    # Markers count as occupied space too, so a name never covers another point.
    pix = ax.transData.transform(np.column_stack([x[ok], y[ok]])) if ok.any() else np.zeros((0, 2))
    r = 3.5 * fig.dpi / 72
    placed = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pix]
    keyed: list[str] = []

    def try_place(i: int, text: str, force: bool) -> bool:
        for n, (dx, dy) in enumerate(_LABEL_SLOTS):
            ann = ax.annotate(text, (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", fontsize=6,
                              color="0.25", ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed) or (force and n == len(_LABEL_SLOTS) - 1):
                placed.append(box)
                return True
            ann.remove()
        return False

    for i in np.argsort(np.where(ok, x, np.inf), kind="stable"):
        if ok[i] and not try_place(i, str(labels[i]), force=False):
            try_place(i, str(numbers[i]), force=True)
            keyed.append((numbers[i], f"{numbers[i]}: {labels[i]}"))
    return [text for _, text in sorted(keyed)]


def _note(ax, lines: list[str]) -> None:
    """Small text under an axes (after the layout is frozen, so it cannot move the axes)."""
    if lines:
        ax.text(0.0, -0.16, "\n".join(lines), transform=ax.transAxes, fontsize=6, va="top", ha="left",
                color="0.25", wrap=True)


def forgetting_vs_frequency(table: pd.DataFrame, first: Correlation, dap: Correlation,
                            path: str | os.PathLike, threshold: float = 0.2, dap_sparsity: float = 0.95) -> None:
    """Two scatters against ln(train count): first sparsity with a drop, and relative AP change at 95%.

    ``table`` has ``class_name, ln_train_count, first_drop, dap95``; classes whose drop was
    never reached are not drawn and are named under the first panel.
    """
    with styled_figure(path, ncols=2, width=4.8, height=4.0) as (fig, axes):
        ax = axes[0]
        reached = table["first_drop"].notna()
        x1 = table.loc[reached, "ln_train_count"].to_numpy(float)
        y1 = table.loc[reached, "first_drop"].to_numpy(float)
        _scatter(ax, x1, y1, "#1f5fa8")
        ax.set_xlabel("ln(train count)")
        ax.set_ylabel(f"First sparsity with a {threshold:.0%} drop in AP")
        ax.set_title(f"First {threshold:.0%} drop\n{corr_text(first)}", fontsize=8)
        x2 = table["ln_train_count"].to_numpy(float)
        y2 = table["dap95"].to_numpy(float)
        _scatter(axes[1], x2, y2, "#c0392b")
        axes[1].set_xlabel("ln(train count)")
        axes[1].set_ylabel(f"Relative change in AP at {dap_sparsity:.0%} sparsity")
        axes[1].set_title(f"AP change at {dap_sparsity:.0%} sparsity\n{corr_text(dap)}", fontsize=8)
        numbers = list(range(1, len(table) + 1))  # a class's row in the table, the same in both panels
        key1 = _place_labels(axes[0], x1, y1, table.loc[reached, "class_name"].to_list(),
                             [n for n, r in zip(numbers, reached) if r])
        key2 = _place_labels(axes[1], x2, y2, table["class_name"].to_list(), numbers)
        not_reached = table.loc[~reached, "class_name"].astype(str).to_list()
        _note(axes[0], ([f"Not reached (excluded): {', '.join(not_reached)}"] if not_reached else [])
              + (["; ".join(key1)] if key1 else []))
        _note(axes[1], ["; ".join(key2)] if key2 else [])


def fcd_scatter(pairs: pd.DataFrame, corrs: Mapping[str, Correlation], path: str | os.PathLike,
                distance: str = "euclidean", p_name: str = "p") -> None:
    """FCD of every class pair against |d ln f| and against IoU^(1/4) (``p_name``: see :func:`corr_text`)."""
    ylabel = "FCD (Euclidean distance)" if distance == "euclidean" else "FCD (mean squared difference)"
    with styled_figure(path, ncols=2, width=4.5, height=3.8) as (fig, axes):
        for ax, col, key, xlabel, color in (
                (axes[0], "abs_dlnf", "freq", r"$|\ln f_A - \ln f_B|$", "#1f5fa8"),
                (axes[1], "iou_quarter", "iou", "IoU(A, B)$^{1/4}$", "#7d3c98")):
            ax.scatter(pairs[col], pairs["fcd"], s=10, color=color, alpha=0.7, edgecolor="none")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"FCD vs {'frequency difference' if key == 'freq' else 'co-occurrence'}\n"
                         f"{corr_text(corrs[key], p_name)}", fontsize=8)


def pie_ratios(class_ratios: pd.DataFrame, findings_ratios: pd.DataFrame, path: str | os.PathLike) -> None:
    """Bars of the smoothed PIE enrichment per class and of the PIE / non-PIE ratio per number
    of findings.

    The class panel shows ``enrichment`` = log((k + 0.5) / (n q + 0.5))
    (:mod:`cxrprune.stats.enrichment`), defined for every class with a test positive: the raw
    prevalence ratio is 0 for a class without a PIE and huge for a rare class with one, which
    drew the eye to exactly the classes chance favoured. A class without a test positive has no
    enrichment and is marked by text, not drawn as a bar.
    """
    with styled_figure(path, ncols=2, width=5.0, height=4.0) as (fig, axes):
        ax = axes[0]
        names = class_ratios["class_name"].astype(str).to_list()
        enrichment = class_ratios["enrichment"].to_numpy(dtype=np.float64)
        x = np.arange(len(names))
        ok = np.isfinite(enrichment)
        ax.bar(x[ok], enrichment[ok], color=np.where(enrichment[ok] > 0, "#c0392b", "#1f5fa8"), width=0.75)
        ax.axhline(0.0, color="0.3", linestyle="--", linewidth=0.8)
        for xi in x[~ok]:
            ax.annotate("n/a", (xi, 0.0), ha="center", va="bottom", fontsize=6, color="0.4")
        ax.set_xticks(x, names, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
        ax.set_xlim(-0.6, len(names) - 0.4)  # every class keeps its slot, drawn or not
        ax.set_ylabel("ln((PIE positives + 0.5) / (expected + 0.5))")
        ax.set_title("PIE enrichment by class (smoothed)")
        ax = axes[1]
        fr = findings_ratios["ratio"].to_numpy(dtype=np.float64)
        xb = np.arange(len(fr))
        ok = np.isfinite(fr)
        ax.bar(xb[ok], fr[ok], color="#7d3c98", width=0.6)
        for xi, r in zip(xb, fr):
            if not np.isfinite(r):
                ax.annotate("n/a", (xi, 0), ha="center", va="bottom", fontsize=7, color="0.4")
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=0.8)
        ax.set_xticks(xb, findings_ratios["findings"].astype(str).to_list())
        ax.set_xlim(-0.6, len(fr) - 0.4)
        ax.set_xlabel("Number of findings per image (No Finding excluded)")
        ax.set_ylabel("Fraction among PIEs / among non-PIEs")
        ax.set_title("PIE over-representation by number of findings")


def weight_histogram(hist: pd.DataFrame, path: str | os.PathLike,
                     fractions: Mapping[str, float] | None = None) -> None:
    """Histogram of |w| (log count axis), with the fractions below thresholds as a note."""
    with styled_figure(path, width=5.5, height=3.6) as (fig, (ax,)):
        if len(hist) == 0:  # imported predictions: no trained model to read weights from
            ax.text(0.5, 0.5, "no trained model (imported predictions)", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            return
        width = (hist["bin_right"] - hist["bin_left"]).to_numpy(float) if "bin_right" in hist else None
        counts = hist["count"].to_numpy(dtype=np.float64)
        ax.bar(hist["abs_weight"], np.where(counts > 0, counts, np.nan), width=width, color="#1f5fa8",
               edgecolor="none")
        ax.set_yscale("log")
        ax.set_xlabel("|w| (Conv2d and Linear weights)")
        ax.set_ylabel("Count (log scale)")
        ax.set_title("Weight magnitudes of a trained model")
        if fractions:
            lines = [f"{k.replace('frac_below_', '|w| < ')}: {v:.1%}" for k, v in fractions.items()
                     if k.startswith("frac_below_") and v is not None and math.isfinite(v)]
            ax.text(0.97, 0.95, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=7,
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})


def pareto(points: pd.DataFrame, path: str | os.PathLike,
           operating: Mapping[str, Mapping[str, object]] | None = None) -> None:
    """Accuracy against measured cost, one line per method, points labelled by level: x =
    batch-1 latency relative to the dense model (left: the median ratio of interleaved
    timings, bars its 95% interval; a hollow marker where the interval contains 1, i.e. no
    latency difference from the dense model was shown) and bytes of the deployable file
    (right), y = median mAP (top) and the worst class's median relative AP change (bottom).
    ``points`` is :func:`cxrprune.analysis.cost_accuracy.pareto_table`; a method's operating
    point (the largest level at which every class is shown non-inferior) is ringed when
    ``operating`` gives it."""
    panels = [("latency_ratio", "map"), ("megabytes", "map"),
              ("latency_ratio", "worst_class_rel_dap"), ("megabytes", "worst_class_rel_dap")]
    xlabels = {"latency_ratio": "Latency, batch 1, x dense (interleaved; bars: 95% CI; hollow: not shown to differ)",
               "megabytes": "Deployable file (MB, measured)"}
    ylabels = {"map": "mAP (median over seeds)", "worst_class_rel_dap": "Worst class: relative change in AP"}
    palette = colormaps["tab10"]
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(10.0, 7.2), layout="constrained")
        axes = fig.subplots(2, 2).ravel()
        measured = points[["latency_ratio", "megabytes"]].notna().all(axis=1).any()
        for ax, (x, y) in zip(axes, panels):
            ax.set_xlabel(xlabels[x])
            ax.set_ylabel(ylabels[y])
            if not measured:
                ax.text(0.5, 0.5, "no efficiency measurements\n(imported predictions come without models)",
                        ha="center", va="center", transform=ax.transAxes)
                continue
            for i, (method, g) in enumerate(points.groupby("method", sort=False)):
                g = g.sort_values("level")
                color, marker = METHOD_STYLES.get(str(method), (palette(i % 10), "o"))
                style = {"marker": "s", "markersize": 6, "color": "0.2"} if method == "dense" else \
                    {"marker": marker, "markersize": 4.5, "color": color}
                ax.plot(g[x], g[y], linewidth=1.0, label=METHOD_LABELS.get(str(method), str(method)), **style)
                if x == "latency_ratio" and method != "dense":
                    ax.errorbar(g[x], g[y], xerr=[g[x] - g["latency_ratio_lo"], g["latency_ratio_hi"] - g[x]],
                                fmt="none", ecolor=style["color"], elinewidth=0.6, alpha=0.7)
                    same = g[(g["latency_ratio_lo"] <= 1.0) & (g["latency_ratio_hi"] >= 1.0)]
                    ax.plot(same[x], same[y], marker=style["marker"], markersize=style["markersize"],
                            markerfacecolor="white", markeredgecolor=style["color"], linestyle="none")
                for xv, yv, k in zip(g[x], g[y], g["level"]):
                    if np.isfinite(xv) and np.isfinite(yv) and method != "dense":
                        ax.annotate(f"{k:g}", (xv, yv), textcoords="offset points", xytext=(3, 3), fontsize=5.5,
                                    color=style["color"])
                point = (operating or {}).get(str(method), {}).get("operating_point")
                hit = g[np.isclose(g["level"], point)] if point is not None else g.iloc[0:0]
                if len(hit):
                    ax.plot(hit[x], hit[y], marker="o", markersize=10, markerfacecolor="none",
                            markeredgecolor=style["color"], linestyle="none")
            if y == "worst_class_rel_dap":
                ax.axhline(0.0, color="0.3", linestyle="--", linewidth=0.8)
            if x == "latency_ratio":
                ax.axvline(1.0, color="0.3", linestyle=":", linewidth=0.8)
        if measured:  # one legend below the panels, clear of the data
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, title="Method (ring: operating point, every class shown non-inferior)",
                       loc="outside lower center", ncol=min(len(labels), 6))
        fig.suptitle("What each compression method buys and what it forgets (labels: level)")
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
