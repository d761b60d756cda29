"""The study's figure: each class's forgetting in its rare arm against its common arm."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cxrprune.analysis.figures import styled_figure

COLORS = {"A": "#c0392b", "B": "#1f5fa8"}


def rare_vs_common(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Left: dense AUROC common arm (x) vs rare arm (y), the manipulation check. Right: mean
    retained AUROC over the levels, common (x) vs rare (y); below the diagonal = forgotten
    more when rare. Hollow markers: classes left out of the contrasts (listed in the JSON)."""
    with styled_figure(path, ncols=2, width=4.2, height=4.0) as (_, axes):
        for ax, key, label in ((axes[0], "dense_auroc", "dense AUROC"),
                               (axes[1], "retained", "retained AUROC (mean over levels)")):
            x, y = table[f"{key}_common"].to_numpy(np.float64), table[f"{key}_rare"].to_numpy(np.float64)
            finite = np.isfinite(x) & np.isfinite(y)
            low = float(min(np.min(x[finite]), np.min(y[finite]), 0.5)) if finite.any() else 0.0
            high = float(max(np.max(x[finite]), np.max(y[finite]), 1.0)) if finite.any() else 1.0
            ax.plot([low, high], [low, high], color="black", lw=0.7)
            for half, colour in COLORS.items():
                for kept, face in ((True, colour), (False, "none")):
                    rows = (table["half"] == half) & ((table["excluded"] == "") == kept)
                    ax.scatter(x[rows], y[rows], s=18, facecolors=face, edgecolors=colour,
                               label=f"half {half}" if kept else None)
            for c, xi, yi in zip(table["class_name"], x, y):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(c[:12], (xi, yi), fontsize=5, xytext=(2, 2), textcoords="offset points")
            ax.set_xlabel(f"{label}, arm where the class is common")
            ax.set_ylabel(f"{label}, arm where the class is rare")
        axes[0].set_title("Intervention took effect: rare arm weaker")
        axes[1].set_title("Below the line: forgotten more when rare")
        axes[0].legend(loc="lower right")
