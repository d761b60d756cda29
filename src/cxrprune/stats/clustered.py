"""Reader-study comparisons with the image as the unit of analysis.

Several readers rate each image, and ratings of one image share that image's difficulty: they
are not independent. Testing the ratings as if they were (pseudo-replication, Hurlbert 1984)
multiplies the apparent sample size by the number of readers and rejects far too often when
images differ. Here each image's ratings are averaged first (the summary-measures approach,
Altman & Bland 1997 for repeated measures), and the groups of images are compared by
Mann-Whitney U (two groups) or Kruskal-Wallis (more): one observation per image, as the
design has.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from cxrprune.stats import checks
from cxrprune.stats.results import plain

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class ImageLevelResult:
    """Groups in sorted order; ``n_ratings`` counts the ratings behind each group's images.
    ``alternative`` ``greater`` (two groups only) means the first group rates higher."""

    test: str  # "mann-whitney" or "kruskal-wallis"
    statistic: float
    p: float
    alternative: str
    groups: tuple[str, ...]
    n_images: tuple[int, ...]
    n_ratings: tuple[int, ...]
    n_ratings_left_out: int  # missing (NaN) ratings

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def image_level_test(ratings_df: Any, image_col: Any, group_col: Any, value_col: Any, *,
                     alternative: str = "two-sided") -> ImageLevelResult:
    """Average each image's ratings, then compare groups of images (scipy Mann-Whitney U with
    ``method="auto"``, or Kruskal-Wallis). Every image must belong to one group; NaN ratings
    are left out (and counted), an image with no rating left is then absent."""
    alternative = checks.choice(alternative, "alternative", ALTERNATIVES)
    images = checks.column(ratings_df, image_col, "ratings_df")
    groups = checks.column(ratings_df, group_col, "ratings_df")
    try:
        values = checks.column(ratings_df, value_col, "ratings_df").astype(np.float64)
    except (TypeError, ValueError):
        checks.fail("ratings_df", f"column {value_col!r} must be numeric")
    if np.isinf(values).any():
        checks.fail("ratings_df", f"column {value_col!r} has infinite values")
    ok = ~np.isnan(values)
    left_out = int((~ok).sum())
    images, groups, values = images[ok], groups[ok], values[ok]
    image_codes = _codes(images, image_col)
    group_names, group_codes = _names_and_codes(groups, group_col)
    if len(group_names) < 2:
        checks.fail("ratings_df", f"column {group_col!r} needs at least 2 groups, got {len(group_names)}")
    n_img = int(image_codes.max()) + 1
    lo = np.full(n_img, len(group_names))
    hi = np.full(n_img, -1)
    np.minimum.at(lo, image_codes, group_codes)
    np.maximum.at(hi, image_codes, group_codes)
    split = np.flatnonzero(lo != hi)
    if split.size:
        first = images[np.argmax(image_codes == split[0])]
        checks.fail("ratings_df", f"image {checks.shown(first)} has ratings in more than one {group_col!r} group")
    counts = np.bincount(image_codes, minlength=n_img)
    means = np.bincount(image_codes, weights=values, minlength=n_img) / counts
    samples = [means[lo == g] for g in range(len(group_names))]
    n_ratings = tuple(int(counts[lo == g].sum()) for g in range(len(group_names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-equal samples: scipy warns and returns NaN
        if len(samples) == 2:
            res = sps.mannwhitneyu(samples[0], samples[1], alternative=alternative, method="auto")
            test = "mann-whitney"
        else:
            if alternative != "two-sided":
                checks.fail("alternative", f"Kruskal-Wallis over {len(samples)} groups is two-sided only")
            res = sps.kruskal(*samples)
            test = "kruskal-wallis"
    return ImageLevelResult(test, float(res.statistic), float(res.pvalue), alternative, group_names,
                            tuple(len(s) for s in samples), n_ratings, left_out)


def _codes(values: np.ndarray, col: Any) -> np.ndarray:
    try:
        return np.unique(values, return_inverse=True)[1].reshape(-1)
    except TypeError:
        checks.fail("ratings_df", f"column {col!r} mixes types that cannot be compared")


def _names_and_codes(values: np.ndarray, col: Any) -> tuple[tuple[str, ...], np.ndarray]:
    try:
        uniq, inverse = np.unique(values, return_inverse=True)
    except TypeError:
        checks.fail("ratings_df", f"column {col!r} mixes types that cannot be compared")
    return tuple(str(u) for u in uniq), inverse.reshape(-1)
