"""PIE vs non-PIE statistics per question, per reader and pooled, with the image as the unit; the figure."""

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


def one_rating_each(pie: np.ndarray, non: np.ndarray) -> dict:
    """compare() with every rating of its own image (one reader)."""
    values = np.concatenate([pie, non])
    return compare(values, np.arange(len(values)) < len(pie), np.arange(len(values)))


def test_compare_matches_numpy_and_scipy():
    pie = np.array([1, 2, 2, 3, 1, 2], float)
    non = np.array([4, 5, 3, 4, 4, 5, 2], float)
    s = one_rating_each(pie, non)
    assert s["n_pie"] == 6 and s["n_non_pie"] == 7 and s["n_images_pie"] == 6 and s["n_images_non_pie"] == 7
    assert s["pie_mean"] == pytest.approx(pie.mean()) and s["pie_sd"] == pytest.approx(pie.std(ddof=1))
    assert s["non_pie_mean"] == pytest.approx(non.mean()) and s["non_pie_sd"] == pytest.approx(non.std(ddof=1))
    u, pu = sps.mannwhitneyu(pie, non, alternative="two-sided")
    assert s["u_pie"] == pytest.approx(u) and s["p"] == pytest.approx(pu)
    assert s["rank_biserial"] == pytest.approx(2 * u / (6 * 7) - 1)
    assert s["rank_biserial"] < -0.8  # PIEs rated much lower
    assert s["test"].startswith("image-level")


def test_ratings_of_one_image_count_once():
    """Three readers rate the same images: the test sees one mean per image (the oracle: pandas
    groupby, then scipy on the image means), not three times as many ratings."""
    rng = np.random.default_rng(4)
    images = np.array([f"img{i}" for i in range(12)])
    pie_image = np.arange(12) < 5
    rows = pd.DataFrame([{"image_id": img, "is_pie": pie, "rating": float(rng.integers(1, 6))}
                         for _ in range(3) for img, pie in zip(images, pie_image)])
    s = compare(rows["rating"], rows["is_pie"], rows["image_id"])
    assert (s["n_pie"], s["n_non_pie"], s["n_images_pie"], s["n_images_non_pie"]) == (15, 21, 5, 7)
    means = rows.groupby("image_id").agg(rating=("rating", "mean"), is_pie=("is_pie", "first"))
    ref = sps.mannwhitneyu(means.loc[means["is_pie"], "rating"], means.loc[~means["is_pie"], "rating"],
                           alternative="two-sided")
    assert s["p"] == pytest.approx(ref.pvalue)
    assert s["rank_biserial"] == pytest.approx(2 * ref.statistic / (5 * 7) - 1)
    assert s["pie_image_mean"] == pytest.approx(means.loc[means["is_pie"], "rating"].mean())
    assert s["p"] != pytest.approx(sps.mannwhitneyu(rows.loc[rows["is_pie"], "rating"],
                                                    rows.loc[~rows["is_pie"], "rating"]).pvalue)


def test_complete_separation_gives_an_effect_of_one():
    assert one_rating_each(np.array([5, 5, 4.0]), np.array([1, 2, 1.0]))["rank_biserial"] == pytest.approx(1.0)
    assert one_rating_each(np.array([1, 1.0]), np.array([3, 4, 5.0]))["rank_biserial"] == pytest.approx(-1.0)


def test_degenerate_inputs():
    same = one_rating_each(np.array([3, 3.0]), np.array([3, 3, 3.0]))
    assert same["p"] == 1.0 and same["rank_biserial"] == 0.0
    empty = one_rating_each(np.array([]), np.array([1, 2.0]))
    assert empty["n_pie"] == 0 and empty["pie_mean"] is None and empty["p"] is None
    one = one_rating_each(np.array([2.0]), np.array([1, np.nan, 4.0]))
    assert one["pie_sd"] is None and one["n_non_pie"] == 2 and one["n_images_non_pie"] == 2  # NaN = not answered


@settings(max_examples=40, deadline=None)
@given(pie=ratings_1_5, non=ratings_1_5)
def test_effect_size_is_bounded_and_antisymmetric(pie, non):
    a = one_rating_each(np.array(pie, float), np.array(non, float))
    b = one_rating_each(np.array(non, float), np.array(pie, float))
    assert -1 <= a["rank_biserial"] <= 1
    assert a["rank_biserial"] == pytest.approx(-b["rank_biserial"], abs=1e-12)
    assert a["p"] == pytest.approx(b["p"])
    assert 0 <= a["p"] <= 1


def ratings_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for reader in ("r1", "r2"):
        for i in range(40):
            pie = i % 2 == 0
            rows.append({"reader_id": reader, "case_id": f"C{i}", "image_id": f"img{i}", "is_pie": pie,
                         "agree": float(rng.random() < (0.4 if pie else 0.9)),
                         "quality": float(rng.integers(1, 4) if pie else rng.integers(3, 6)),
                         "difficulty": float(rng.integers(3, 6) if pie else rng.integers(1, 4))})
    return pd.DataFrame(rows)


def test_summarize_per_reader_and_pooled():
    df = ratings_table()
    s = summarize(df)
    assert set(s["readers"]) == {"r1", "r2"}
    assert s["pooled"]["quality"]["n_pie"] == 40 and s["readers"]["r1"]["quality"]["n_pie"] == 20
    assert s["pooled"]["quality"]["n_images_pie"] == 20  # two readers, one image
    assert s["pooled"]["quality"]["pie_mean"] < s["pooled"]["quality"]["non_pie_mean"]
    assert s["pooled"]["difficulty"]["rank_biserial"] > 0
    table = summary_table(s)
    assert len(table) == 3 * 3 * 2  # (pooled + 2 readers) x 3 questions x 2 groups
    assert {"n_images", "p", "rank_biserial"} <= set(table.columns)
    assert set(table["group"]) == {"pie", "non_pie"}
    assert summary_table(None).empty


def test_figure_is_written_with_and_without_answers(tmp_path):
    plot_reader_study(summarize(ratings_table()), tmp_path / "fig" / "reader_study.png", "test")
    plot_reader_study(None, tmp_path / "empty.png")
    for name in ("fig/reader_study.png", "empty.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 800
