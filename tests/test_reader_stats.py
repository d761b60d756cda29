"""PIE vs non-PIE statistics per question, per reader and pooled; the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats as sps

from cxrprune.reader.figure import plot_reader_study
from cxrprune.reader.stats import compare, summarize, summary_table

ratings_1_5 = st.lists(st.integers(1, 5), min_size=1, max_size=30)


def test_compare_matches_numpy_and_scipy():
    pie = np.array([1, 2, 2, 3, 1, 2], float)
    non = np.array([4, 5, 3, 4, 4, 5, 2], float)
    s = compare(pie, non)
    assert s["n_pie"] == 6 and s["n_non_pie"] == 7
    assert s["pie_mean"] == pytest.approx(pie.mean()) and s["pie_sd"] == pytest.approx(pie.std(ddof=1))
    assert s["non_pie_mean"] == pytest.approx(non.mean()) and s["non_pie_sd"] == pytest.approx(non.std(ddof=1))
    h, p = sps.kruskal(pie, non)
    assert s["kruskal_h"] == pytest.approx(h) and s["kruskal_p"] == pytest.approx(p)
    u, pu = sps.mannwhitneyu(pie, non, alternative="two-sided")
    assert s["mannwhitney_u"] == pytest.approx(u) and s["mannwhitney_p"] == pytest.approx(pu)
    assert s["rank_biserial"] == pytest.approx(2 * u / (6 * 7) - 1)
    assert s["rank_biserial"] < -0.8  # PIEs rated much lower


def test_complete_separation_gives_an_effect_of_one():
    assert compare(np.array([5, 5, 4.0]), np.array([1, 2, 1.0]))["rank_biserial"] == pytest.approx(1.0)
    assert compare(np.array([1, 1.0]), np.array([3, 4, 5.0]))["rank_biserial"] == pytest.approx(-1.0)


def test_degenerate_inputs():
    same = compare(np.array([3, 3.0]), np.array([3, 3, 3.0]))
    assert same["kruskal_p"] == 1.0 and same["mannwhitney_p"] == 1.0 and same["rank_biserial"] == 0.0
    empty = compare(np.array([]), np.array([1, 2.0]))
    assert empty["n_pie"] == 0 and empty["pie_mean"] is None and empty["kruskal_p"] is None
    one = compare(np.array([2.0]), np.array([1, np.nan, 4.0]))
    assert one["pie_sd"] is None and one["n_non_pie"] == 2  # NaN = question not answered


@settings(max_examples=40, deadline=None)
@given(pie=ratings_1_5, non=ratings_1_5)
def test_effect_size_is_bounded_and_antisymmetric(pie, non):
    a = compare(np.array(pie, float), np.array(non, float))
    b = compare(np.array(non, float), np.array(pie, float))
    assert -1 <= a["rank_biserial"] <= 1
    assert a["rank_biserial"] == pytest.approx(-b["rank_biserial"], abs=1e-12)
    assert a["kruskal_p"] == pytest.approx(b["kruskal_p"])
    assert 0 <= a["kruskal_p"] <= 1 and 0 <= a["mannwhitney_p"] <= 1


def ratings_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for reader in ("r1", "r2"):
        for i in range(40):
            pie = i % 2 == 0
            rows.append({"reader_id": reader, "case_id": f"C{i}", "is_pie": pie,
                         "agree": float(rng.random() < (0.4 if pie else 0.9)),
                         "quality": float(rng.integers(1, 4) if pie else rng.integers(3, 6)),
                         "difficulty": float(rng.integers(3, 6) if pie else rng.integers(1, 4))})
    return pd.DataFrame(rows)


def test_summarize_per_reader_and_pooled():
    df = ratings_table()
    s = summarize(df)
    assert set(s["readers"]) == {"r1", "r2"}
    assert s["pooled"]["quality"]["n_pie"] == 40 and s["readers"]["r1"]["quality"]["n_pie"] == 20
    assert s["pooled"]["quality"]["pie_mean"] < s["pooled"]["quality"]["non_pie_mean"]
    assert s["pooled"]["difficulty"]["rank_biserial"] > 0
    table = summary_table(s)
    assert len(table) == 3 * 3 * 2  # (pooled + 2 readers) x 3 questions x 2 groups
    assert set(table["group"]) == {"pie", "non_pie"}
    assert summary_table(None).empty


def test_figure_is_written_with_and_without_answers(tmp_path):
    plot_reader_study(summarize(ratings_table()), tmp_path / "fig" / "reader_study.png", "test")
    plot_reader_study(None, tmp_path / "empty.png")
    for name in ("fig/reader_study.png", "empty.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 800
