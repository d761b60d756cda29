"""PIEs versus non-PIEs, per question: mean +- SD of the ratings and an image-level test.

For each question the PIE ratings are compared with the non-PIE ratings (``agree`` coded
1 = yes, 0 = no, so its mean is the fraction of "yes"). Several readers rate each image and
their ratings of one image share its difficulty, so the ratings are not independent: a test
over ratings (the paper's Kruskal-Wallis) counts each image once per reader and rejects far
too often. The test here has the image as its unit
(:func:`cxrprune.stats.clustered.image_level_test`): each image's ratings are averaged, then
the PIE images are compared with the non-PIE images by a two-sided Mann-Whitney U test, with
the rank-biserial correlation ``r = 2 U_pie / (n_pie n_non) - 1`` of those image means as
effect size: r > 0 when PIEs tend to get the higher answers, r < 0 when they get the lower
ones, in [-1, 1]. ``pie_mean``/``pie_sd`` (and ``non_pie_``) describe the ratings themselves,
``pie_image_mean``/``non_pie_image_mean`` the image means the test compares: they differ when
some images were rated more often than others.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cxrprune.reader.answers import QUESTIONS
from cxrprune.stats.clustered import image_level_test

GROUPS = ("non_pie", "pie")
POOLED = "pooled"
TEST = "image-level Mann-Whitney U of per-image mean ratings, two-sided"


def compare(values: Any, is_pie: Any, images: Any) -> dict:
    """Descriptive statistics of the ratings and the image-level test of one question;
    ``None`` where undefined. ``values``, ``is_pie`` and ``images`` (the image each rating is
    of) are aligned; a NaN value is a question not answered and is left out."""
    values = np.asarray(values, dtype=np.float64)
    is_pie = np.asarray(is_pie, dtype=bool)
    images = np.asarray(images).astype(str)
    answered = ~np.isnan(values)
    values, is_pie, images = values[answered], is_pie[answered], images[answered]
    pie, non = values[is_pie], values[~is_pie]
    image_means = pd.Series(values).groupby(images).mean()
    pie_images = image_means.index.isin(np.unique(images[is_pie]))
    out: dict = {"n_pie": int(len(pie)), "n_non_pie": int(len(non)),
                 "n_images_pie": int(pie_images.sum()), "n_images_non_pie": int((~pie_images).sum()),
                 "pie_mean": _mean(pie), "pie_sd": _sd(pie), "non_pie_mean": _mean(non), "non_pie_sd": _sd(non),
                 "pie_image_mean": _mean(image_means[pie_images].to_numpy()),
                 "non_pie_image_mean": _mean(image_means[~pie_images].to_numpy()),
                 "test": TEST, "p": None, "u_pie": None, "rank_biserial": None}
    if len(pie) == 0 or len(non) == 0:
        return out
    res = image_level_test(pd.DataFrame({"image": images, "group": np.where(is_pie, "pie", "non_pie"),
                                         "value": values}), "image", "group", "value")
    n_non, n_pie = res.n_images  # groups in sorted order: non_pie, pie
    u_pie = n_pie * n_non - res.statistic  # scipy's U is the first group's
    out.update(p=_num(res.p), u_pie=_num(u_pie), rank_biserial=_num(2.0 * u_pie / (n_pie * n_non) - 1.0))
    return out


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _sd(x: np.ndarray) -> float | None:
    return float(np.std(x, ddof=1)) if len(x) >= 2 else None


def _num(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def compare_questions(ratings: pd.DataFrame) -> dict:
    pie = ratings["is_pie"].astype(bool).to_numpy()
    return {q: compare(ratings[q].to_numpy(), pie, ratings["image_id"].to_numpy()) for q in QUESTIONS}


def summarize(ratings: pd.DataFrame) -> dict:
    """``{"pooled": {question: stats}, "readers": {reader_id: {question: stats}}}``."""
    readers = {str(r): compare_questions(df) for r, df in ratings.groupby("reader_id", sort=True)}
    return {POOLED: compare_questions(ratings), "readers": readers}


def summary_table(summary: dict | None) -> pd.DataFrame:
    """Long table for plots: reader (or ``pooled``), question, group, ratings, images, mean,
    sd, the image-level p-value and effect size."""
    rows = []
    columns = ["reader", "question", "group", "n", "n_images", "mean", "sd", "p", "rank_biserial"]
    if summary is None:
        return pd.DataFrame(columns=columns)
    blocks = [(POOLED, summary[POOLED])] + sorted(summary["readers"].items())
    for reader, block in blocks:
        for q in QUESTIONS:
            s = block[q]
            for group in GROUPS:
                rows.append({"reader": reader, "question": q, "group": group, "n": s[f"n_{group}"],
                             "n_images": s[f"n_images_{group}"], "mean": s[f"{group}_mean"], "sd": s[f"{group}_sd"],
                             "p": s["p"], "rank_biserial": s["rank_biserial"]})
    return pd.DataFrame(rows, columns=columns)
