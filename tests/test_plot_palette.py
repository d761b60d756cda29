"""Forgettability curves: every one of 20 classes its own colour, the same in PNG and Vega plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrprune.analysis import figures
from cxrprune.analysis.figures import CLASS_PALETTE

ROOT = Path(__file__).resolve().parents[1]


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def test_vega_template_uses_the_figures_palette():
    template = json.loads((ROOT / "plots" / "templates" / "lines_by_class.json").read_text())
    assert template["encoding"]["color"]["scale"]["range"] == list(CLASS_PALETTE)
    assert len(set(CLASS_PALETTE)) == 20


def test_png_draws_twenty_classes_in_twenty_colours(tmp_path):
    classes = [f"class {i}" for i in range(20)]
    k = np.round(np.arange(0.05, 1.0, 0.05), 2)
    curves = pd.DataFrame({c: -k * (i + 1) / 20 for i, c in enumerate(classes)}, index=k)
    counts = pd.Series(np.arange(20, 0, -1) * 50, index=classes)
    figures.forgettability_curves(curves, counts, tmp_path / "f.png")
    pixels = {tuple(p) for p in np.asarray(Image.open(tmp_path / "f.png").convert("RGB")).reshape(-1, 3)}
    missing = [c for c in CLASS_PALETTE if rgb(c) not in pixels]
    assert missing == []


def test_more_classes_than_colours_change_the_dash():
    styles = figures._class_styles([f"c{i}" for i in range(25)])
    assert styles["c0"][0] == styles["c20"][0] and styles["c0"][1] != styles["c20"][1]
    assert len(set(styles.values())) == 25
