"""The study's figure: per-class AP change against the baseline, by treatment, with 95% CIs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

# The analyses' shared figure style and atomic PNG writer (one style for every figure).
from cxrprune.analysis.figures import styled_figure

COLORS = {"remove": "#c0392b", "upweight": "#1f5fa8", "remove_random": "#7f8c8d"}


def ap_change(changes: pd.DataFrame, path: str | os.PathLike) -> None:
    """One row per class (most frequent on top, training count in the label), one marker per
    treatment: the mean over seeds of AP(treated) - AP(baseline), with its 95% t CI."""
    classes = list(dict.fromkeys(changes["class_name"]))
    treatments = list(dict.fromkeys(changes["treatment"]))
    height = 1.2 + 0.22 * len(classes)
    with styled_figure(path, width=6.0, height=height) as (_, (ax,)):
        step = 0.8 / max(len(treatments), 1)
        y0 = np.arange(len(classes))[::-1].astype(np.float64)
        for i, t in enumerate(treatments):
            rows = changes.loc[changes["treatment"] == t].set_index("class_name").loc[classes]
            y = y0 + 0.4 - step * (i + 0.5)
            mid = rows["ap_change"].to_numpy(np.float64)
            lo = mid - rows["ci_low"].to_numpy(np.float64)
            hi = rows["ci_high"].to_numpy(np.float64) - mid
            err = None if np.isnan(lo).all() else np.vstack([np.nan_to_num(lo), np.nan_to_num(hi)])
            ax.errorbar(mid, y, xerr=err, fmt="o", ms=3, lw=0.8, capsize=1.5, color=COLORS.get(t, "black"), label=t)
        counts = changes.drop_duplicates("class_name").set_index("class_name")["train_count"]
        ax.set_yticks(y0, [f"{c} ({int(counts[c])})" for c in classes])
        ax.axvline(0.0, color="black", lw=0.7)
        ax.set_xlabel("AP change vs baseline (dense model, mean over seeds, 95% CI)")
        ax.set_title("PIE treatments: per-class AP change (classes by training frequency)")
        ax.legend(loc="lower right")
