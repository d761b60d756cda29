"""PIEs versus non-PIEs, per question: mean +- SD, Kruskal-Wallis (as published), Mann-Whitney U.

For each question the PIE ratings are compared with the non-PIE ratings (``agree`` coded
1 = yes, 0 = no, so its mean is the fraction of "yes"). The paper reports the
Kruskal-Wallis p-value; the two-sided Mann-Whitney U test is its two-group equivalent and
comes with the rank-biserial correlation ``r = 2 U_pie / (n_pie n_non) - 1`` as effect size:
r > 0 when PIEs tend to get the higher answers, r < 0 when they get the lower ones, in [-1, 1].
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.reader.answers import QUESTIONS

GROUPS = ("non_pie", "pie")
POOLED = "pooled"


def compare(pie: np.ndarray, non: np.ndarray) -> dict:
    """Descriptive statistics and tests of one question; ``None`` where undefined."""
    pie = np.asarray(pie, dtype=np.float64)
    non = np.asarray(non, dtype=np.float64)
    pie = pie[~np.isnan(pie)]
    non = non[~np.isnan(non)]
    out: dict = {"n_pie": int(len(pie)), "n_non_pie": int(len(non)),
                 "pie_mean": _mean(pie), "pie_sd": _sd(pie),
                 "non_pie_mean": _mean(non), "non_pie_sd": _sd(non),
                 "kruskal_h": None, "kruskal_p": None, "mannwhitney_u": None, "mannwhitney_p": None,
                 "rank_biserial": None}
    if len(pie) == 0 or len(non) == 0:
        return out
    if np.all(np.concatenate([pie, non]) == pie[0]):  # every answer the same: no difference at all
        out.update(kruskal_h=0.0, kruskal_p=1.0, mannwhitney_u=len(pie) * len(non) / 2, mannwhitney_p=1.0,
                   rank_biserial=0.0)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h, p = stats.kruskal(pie, non)
        u, pu = stats.mannwhitneyu(pie, non, alternative="two-sided", method="auto")
    out.update(kruskal_h=_num(h), kruskal_p=_num(p), mannwhitney_u=_num(u), mannwhitney_p=_num(pu),
               rank_biserial=_num(2.0 * float(u) / (len(pie) * len(non)) - 1.0))
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
    return {q: compare(ratings.loc[pie, q].to_numpy(), ratings.loc[~pie, q].to_numpy()) for q in QUESTIONS}


def summarize(ratings: pd.DataFrame) -> dict:
    """``{"pooled": {question: stats}, "readers": {reader_id: {question: stats}}}``."""
    readers = {str(r): compare_questions(df) for r, df in ratings.groupby("reader_id", sort=True)}
    return {POOLED: compare_questions(ratings), "readers": readers}


def summary_table(summary: dict | None) -> pd.DataFrame:
    """Long table for plots: reader (or ``pooled``), question, group, n, mean, sd, p-values."""
    rows = []
    columns = ["reader", "question", "group", "n", "mean", "sd", "kruskal_p", "mannwhitney_p", "rank_biserial"]
    if summary is None:
        return pd.DataFrame(columns=columns)
    blocks = [(POOLED, summary[POOLED])] + sorted(summary["readers"].items())
    for reader, block in blocks:
        for q in QUESTIONS:
            s = block[q]
            for group in GROUPS:
                rows.append({"reader": reader, "question": q, "group": group, "n": s[f"n_{group}"],
                             "mean": s[f"{group}_mean"], "sd": s[f"{group}_sd"],
                             "kruskal_p": s["kruskal_p"], "mannwhitney_p": s["mannwhitney_p"],
                             "rank_biserial": s["rank_biserial"]})
    return pd.DataFrame(rows, columns=columns)
