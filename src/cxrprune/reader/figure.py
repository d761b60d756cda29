"""The reader-study figure, after the paper's: mean +- SD per question, PIEs vs non-PIEs."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxrprune.core.atomic import atomic_path  # noqa: E402
from cxrprune.reader.answers import QUESTION_SCALE, QUESTION_TEXT, QUESTIONS  # noqa: E402
from cxrprune.reader.stats import POOLED  # noqa: E402

_LIMITS = {"agree": (-0.1, 1.1), "quality": (0.8, 5.2), "difficulty": (0.8, 5.2)}
_COLORS = {"non_pie": "#1f77b4", "pie": "#d62728"}
_NAMES = {"non_pie": "non-PIE", "pie": "PIE"}


def plot_reader_study(summary: dict | None, path: str | os.PathLike, title: str = "") -> None:
    """Three panels (one per question): pooled mean +- SD per group, readers' means in grey."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), constrained_layout=True)
    for ax, q in zip(axes, QUESTIONS):
        ax.set_title(QUESTION_TEXT[q], fontsize=10)
        ax.set_xticks([0, 1], [_NAMES["non_pie"], _NAMES["pie"]])
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(*_LIMITS[q])
        ax.set_ylabel(QUESTION_SCALE[q], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if summary is None:
            continue
        readers = summary.get("readers", {})
        offsets = _offsets(len(readers))
        for (reader, block), dx in zip(sorted(readers.items()), offsets):
            for x, group in enumerate(("non_pie", "pie")):
                m = block[q][f"{group}_mean"]
                if m is not None:
                    ax.plot(x + 0.18 + dx, m, "o", ms=3.5, color="0.6", zorder=1)
        s = summary[POOLED][q]
        for x, group in enumerate(("non_pie", "pie")):
            m, sd = s[f"{group}_mean"], s[f"{group}_sd"]
            if m is None:
                continue
            ax.errorbar(x, m, yerr=sd or 0.0, fmt="o", ms=8, capsize=6, lw=2, color=_COLORS[group], zorder=3)
        p = s["p"]
        if p is not None:  # images, not ratings, are the unit (reader/stats.py)
            ax.set_title(f"{QUESTION_TEXT[q]}\nimage-level Mann-Whitney p = {_p(p)}", fontsize=10)
    if summary is None:
        fig.text(0.5, 0.5, "no answers yet", ha="center", va="center", fontsize=14, color="0.4")
    elif summary.get("readers"):
        axes[0].plot([], [], "o", ms=3.5, color="0.6", label="each reader's mean")
        axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def _offsets(n: int) -> list[float]:
    if n <= 1:
        return [0.0] * n
    return [-0.06 + 0.12 * i / (n - 1) for i in range(n)]


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"
