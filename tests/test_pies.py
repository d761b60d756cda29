"""PIE Spearman correlations, selection and PIE / non-PIE ratios against scipy and hand counts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from cxrprune.analysis import pies
from cxrprune.core.errors import DataError


def scipy_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([stats.spearmanr(x, y).statistic for x, y in zip(a, b)])


def test_spearman_equals_scipy_on_random_rows():
    rng = np.random.default_rng(0)
    a, b = rng.random((200, 20)), rng.random((200, 20))
    np.testing.assert_allclose(pies.rowwise_spearman(a, b), scipy_rows(a, b), atol=1e-12)


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(300, 7)).astype(float)
    b = rng.integers(0, 3, size=(300, 7)).astype(float)
    ok = (a.std(axis=1) > 0) & (b.std(axis=1) > 0)
    np.testing.assert_allclose(pies.rowwise_spearman(a[ok], b[ok]), scipy_rows(a[ok], b[ok]), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int8, st.tuples(st.integers(1, 6), st.integers(2, 8)), elements=st.integers(0, 3)),
       st.integers(0, 2**32 - 1))
def test_spearman_property(a, seed):
    b = np.random.default_rng(seed).permutation(a.T).T.astype(float)  # same shape, ties kept
    a = a.astype(float)
    got = pies.rowwise_spearman(a, b)
    assert not np.isnan(got).any()
    assert ((got >= -1) & (got <= 1)).all()
    for i in range(len(a)):
        ca, cb = np.ptp(a[i]) == 0, np.ptp(b[i]) == 0
        if ca and cb:
            assert got[i] == 1.0
        elif ca or cb:
            assert got[i] == 0.0
        else:
            assert got[i] == pytest.approx(stats.spearmanr(a[i], b[i]).statistic, abs=1e-12)


def test_constant_rows_are_explicit_never_nan():
    a = np.array([[0.2, 0.2, 0.2], [0.2, 0.2, 0.2], [0.1, 0.5, 0.3], [0.1, 0.5, 0.3]])
    b = np.array([[0.7, 0.7, 0.7], [0.1, 0.5, 0.3], [0.4, 0.4, 0.4], [0.3, 0.9, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no hidden divide-by-zero
        got = pies.rowwise_spearman(a, b)
    assert got.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_select_pies_is_stable_argsort_prefix():
    corr = np.array([0.5, -0.1, 0.3, -0.1, 0.9, 0.2, 0.0, 1.0, 0.4, 0.6])
    assert np.flatnonzero(pies.select_pies(corr, 0.2)).tolist() == [1, 3]
    assert np.flatnonzero(pies.select_pies(corr, 0.15)).tolist() == [1]  # int(1.5) = 1; tie -> first index
    assert np.flatnonzero(pies.select_pies(corr, 0.05)).tolist() == []  # int(0.5) = 0
    n = 21081
    assert pies.select_pies(np.linspace(0, 1, n), 0.05).sum() == int(0.05 * n)


def test_class_prevalence_ratios_by_hand():
    # 6 images; PIEs = images 0, 1.  A: PIE 2/2, non-PIE 1/4 -> 4.  B: PIE 1/2, non-PIE 2/4 -> 1.
    # C: PIE 1/2, non-PIE 0/4 -> undefined.  D: PIE 0/2, non-PIE 1/4 -> 0.
    y = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    is_pie = np.array([True, True, False, False, False, False])
    df = pies.class_prevalence_ratios(y, is_pie, ["A", "B", "C", "D"])
    assert df["ratio"][0] == pytest.approx(4.0)
    assert df["ratio"][1] == pytest.approx(1.0)
    assert math.isnan(df["ratio"][2])
    assert df["ratio"][3] == 0.0
    assert df["prev_pie"].tolist() == [1.0, 0.5, 0.5, 0.0]


def test_findings_exclude_no_finding_and_id_columns():
    labels = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["1", "2", "3"],
                           "No Finding": [1, 0, 0], "A": [0, 1, 1], "B": [0, 1, 0]})
    classes = ["No Finding", "A", "B"]
    assert pies.findings_counts(labels, classes).tolist() == [0, 2, 1]
    assert pies.findings_counts(labels[classes].to_numpy(), classes).tolist() == [0, 2, 1]


def test_findings_bin_ratios_by_hand():
    counts = np.array([3, 5, 1, 0, 0, 1, 2, 3, 0, 1])
    is_pie = np.array([True, True, True, False, False, False, False, False, False, False])
    # PIE bins: 3, 4+, 1 -> fractions 0:0, 1:1/3, 2:0, 3:1/3, 4+:1/3
    # non-PIE (7): 0,0,1,2,3,0,1 -> 0:3/7, 1:2/7, 2:1/7, 3:1/7, 4+:0
    df = pies.findings_bin_ratios(counts, is_pie)
    assert df["findings"].tolist() == ["0", "1", "2", "3", "4+"]
    np.testing.assert_allclose(df["ratio"][:4], [0.0, (1 / 3) / (2 / 7), 0.0, (1 / 3) / (1 / 7)])
    assert math.isnan(df["ratio"][4])
    # >= 3 findings: PIE 2/3, non-PIE 1/7
    assert pies.ratio_at_least(counts, is_pie, 3) == pytest.approx((2 / 3) / (1 / 7))


def test_truth_comparison_by_hand():
    truth = pd.DataFrame({"image_id": ["t3", "x", "t1", "t2", "t4"],
                          "split": ["test", "train", "test", "test", "test"],
                          "flipped": [0, 1, 1, 0, 1], "flipped_class": ["", "A", "A", "", "B"],
                          "quality": [0.9, 0.1, 0.4, 1.0, 0.6],
                          "degradation": ["none", "blur", "blur", "none", "noise"]})
    aligned = pies.align_truth(truth, ["t1", "t2", "t3", "t4"])
    assert aligned["image_id"].tolist() == ["t1", "t2", "t3", "t4"]
    is_pie = np.array([True, False, False, False])
    out = pies.truth_comparison(aligned, is_pie)
    assert out["frac_flipped_pie"] == 1.0
    assert out["frac_flipped_nonpie"] == pytest.approx(1 / 3)
    assert out["ratio_flipped_label"] == pytest.approx(3.0)
    assert out["mean_quality_pie"] == pytest.approx(0.4)
    assert out["mean_quality_nonpie"] == pytest.approx((1.0 + 0.9 + 0.6) / 3)
    assert out["frac_degraded_pie"] == 1.0 and out["frac_degraded_nonpie"] == pytest.approx(1 / 3)
    # Oracles: scipy's Fisher exact test on the 2x2 table, Mann-Whitney U on the qualities.
    assert out["flipped_p"] == pytest.approx(stats.fisher_exact([[1, 0], [1, 2]], alternative="greater").pvalue)
    assert out["flipped_p"] == pytest.approx(2 / 4)  # by hand: P(the one PIE is one of the 2 flipped of 4)
    assert out["quality_p"] == pytest.approx(stats.mannwhitneyu([0.4], [1.0, 0.9, 0.6], alternative="less").pvalue)
    assert out["degraded_p"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="lacks test images"):
        pies.align_truth(truth, ["t1", "x"])  # x is a train image


def test_enrichment_p_values():
    rng = np.random.default_rng(0)
    is_pie = np.zeros(900, bool)
    is_pie[:45] = True
    enriched = np.r_[rng.random(45) < 0.3, rng.random(855) < 0.05]
    assert pies.enrichment_p(enriched, is_pie) < 1e-4
    assert pies.enrichment_p(~enriched, is_pie) > 0.99  # depleted: one-sided, not significant
    assert pies.lower_p(np.r_[np.full(45, 0.5), np.ones(855)], is_pie) < 1e-6
    assert np.isnan(pies.enrichment_p(enriched, np.zeros(900, bool)))
    assert np.isnan(pies.lower_p(enriched, np.ones(900, bool)))


def test_ensemble_mean_and_alignment_check():
    a = pd.DataFrame({"image_id": ["i1", "i2"], "A": [0.2, 0.4], "B": [1.0, 0.0]})
    b = pd.DataFrame({"image_id": ["i1", "i2"], "A": [0.4, 0.0], "B": [0.0, 0.0]})
    ids, p = pies.ensemble([a, b], ["A", "B"])
    assert ids.tolist() == ["i1", "i2"]
    np.testing.assert_allclose(p, [[0.3, 0.5], [0.2, 0.0]])
    with pytest.raises(DataError, match="different test images"):
        pies.ensemble([a, b.iloc[::-1]], ["A", "B"])


def test_pie_table_sorted_with_pies_first():
    corr = np.array([0.5, -0.1, 0.3, -0.1])
    is_pie = pies.select_pies(corr, 0.5)
    table = pies.pie_table(["a", "b", "c", "d"], corr, is_pie)
    assert table["image_id"].tolist() == ["b", "d", "c", "a"]
    assert table["is_pie"].tolist() == [True, True, False, False]


def test_selection_resamples_equal_the_selection_on_each_resamples_drawn_seeds():
    """Each resample's PIE set is exactly what select_pies gives on the ensembles (scipy's
    Spearman) of the seeds that resample drew, duplicates counted; drawing every seed once
    gives the run's own set. The chunked path (tiny budget) gives the same masks."""
    rng = np.random.default_rng(3)
    s, n, c, b = 4, 60, 6, 7
    dense, sparse = rng.random((s, n, c)), rng.random((s, n, c))
    draws = rng.integers(0, s, size=(b, s))
    draws[0] = np.arange(s)
    got = pies.selection_resamples(dense, sparse, draws, 0.1)
    assert got.shape == (n, b) and (got.sum(axis=0) == int(0.1 * n)).all()
    for j, d in enumerate(draws):
        corr = scipy_rows(dense[d].mean(axis=0), sparse[d].mean(axis=0))
        expected = np.zeros(n, dtype=bool)
        expected[np.argsort(corr, kind="stable")[: int(0.1 * n)]] = True
        np.testing.assert_array_equal(got[:, j], expected)
    run_set = pies.select_pies(pies.rowwise_spearman(dense.mean(axis=0), sparse.mean(axis=0)), 0.1)
    np.testing.assert_array_equal(got[:, 0], run_set)
    np.testing.assert_array_equal(pies.selection_resamples(dense, sparse, draws, 0.1, budget=1), got)
