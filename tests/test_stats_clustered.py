"""cxrprune.stats.clustered: image-level tests equal scipy on the image means, and hold their
level where the rating-level test (pseudo-replication) does not.

Oracles: image means from pandas groupby, then scipy.stats.mannwhitneyu / kruskal.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrprune.core.errors import CxrpruneError
from cxrprune.stats.clustered import image_level_test


def ratings(rng: np.random.Generator, n_images: int, readers: int, groups: list[str],
            image_sd: float = 1.0, reader_sd: float = 0.7) -> pd.DataFrame:
    """Likert 1-5 ratings: 3 + image effect + reader noise, rounded; no group effect."""
    effect = rng.normal(0.0, image_sd, size=n_images * len(groups))
    image = np.repeat(np.arange(effect.size), readers)
    value = np.clip(np.round(3 + effect[image] + rng.normal(0.0, reader_sd, size=image.size)), 1, 5)
    group = np.asarray(groups)[image // n_images]
    return pd.DataFrame({"image_id": [f"img{i:03d}" for i in image], "group": group, "rating": value})


@pytest.mark.parametrize("groups, test", [(["non_pie", "pie"], "mann-whitney"),
                                          (["a", "b", "c"], "kruskal-wallis")])
def test_equals_scipy_on_the_image_means(groups, test):
    rng = np.random.default_rng(1)
    df = ratings(rng, 12, 4, groups)
    df = df.drop(index=rng.choice(len(df), 10, replace=False))  # unequal ratings per image
    df.loc[df.index[:3], "rating"] = np.nan  # missing answers are left out and counted
    res = image_level_test(df, "image_id", "group", "rating")
    means = df.dropna(subset=["rating"]).groupby("image_id").agg(group=("group", "first"), rating=("rating", "mean"))
    samples = [means.loc[means["group"] == g, "rating"].to_numpy() for g in groups]
    ref = stats.mannwhitneyu(*samples, alternative="two-sided") if len(groups) == 2 else stats.kruskal(*samples)
    assert res.test == test and res.groups == tuple(groups)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.n_images == tuple(len(s) for s in samples)
    assert res.n_ratings == tuple(int(df["rating"][df["group"] == g].notna().sum()) for g in groups)
    assert res.n_ratings_left_out == 3
    assert json.loads(json.dumps(res.to_dict())) == res.to_dict()


def test_one_sided_mann_whitney_equals_scipy():
    df = pd.DataFrame({"img": [1, 1, 2, 2, 3, 4, 4, 5], "g": list("aaaabbbb"), "v": [1, 2, 3, 3, 5, 4, 5, 2]})
    res = image_level_test(df, "img", "g", "v", alternative="less")
    ref = stats.mannwhitneyu([1.5, 3.0], [5.0, 4.5, 2.0], alternative="less")
    assert (res.statistic, res.p) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))


def test_image_level_holds_its_level_where_rating_level_does_not():
    """20 images per group, 5 readers each, image effect SD 1, reader noise SD 0.7, Likert
    1-5, no group effect, 300 replicates (MC SE 0.013 at 0.05). Measured (seed 0): rating-
    level Kruskal-Wallis rejects 0.287, the image-level test 0.047."""
    rng = np.random.default_rng(0)
    reps = 300
    rating_level = image_level = 0
    for _ in range(reps):
        df = ratings(rng, 20, 5, ["non_pie", "pie"])
        pie = df["group"] == "pie"
        rating_level += stats.kruskal(df.loc[pie, "rating"], df.loc[~pie, "rating"]).pvalue <= 0.05
        image_level += image_level_test(df, "image_id", "group", "rating").p <= 0.05
    print(f"no group effect: rating-level KW {rating_level / reps:.3f}, image-level {image_level / reps:.3f}")
    assert rating_level / reps > 0.2
    assert image_level / reps <= 0.08


def test_bad_input_is_a_cxrprune_error_naming_the_argument():
    df = pd.DataFrame({"img": [1, 1, 2, 3], "g": ["a", "b", "b", "a"], "v": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(CxrpruneError, match="^ratings_df: image 1 has ratings in more than one 'g' group"):
        image_level_test(df, "img", "g", "v")
    with pytest.raises(CxrpruneError, match="^ratings_df: no column 'x'"):
        image_level_test(df, "img", "x", "v")
    with pytest.raises(CxrpruneError, match="^ratings_df: column 'g' needs at least 2 groups"):
        image_level_test(df.assign(g="a"), "img", "g", "v")
    with pytest.raises(CxrpruneError, match="^ratings_df: column 'v' must be numeric"):
        image_level_test(df.assign(v=["x", "y", "z", "w"]), "img", "g", "v")
    with pytest.raises(CxrpruneError, match="^alternative: Kruskal-Wallis over 3 groups is two-sided only"):
        image_level_test(df.assign(g=["a", "a", "b", "c"]), "img", "g", "v", alternative="less")
