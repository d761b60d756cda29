"""cxrprune.stats.metrics against scikit-learn, the oracle the study's definitions name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrprune.stats.metrics import (
    average_precision,
    classification_metrics,
    f1_at_threshold,
    metrics_for_blocks,
    roc_auc,
)

TOL = 1e-12


def sk_ap(y, s):
    if y.sum() == 0:
        return np.nan
    return average_precision_score(y, s)


def sk_auc(y, s):
    if y.min() == y.max():
        return np.nan
    return roc_auc_score(y, s)


def sk_f1(y, s, t=0.5):
    return f1_score(y, (s >= t).astype(int), zero_division=0)


def assert_matches_sklearn(y, s, threshold=0.5):
    m = classification_metrics(y, s, threshold)
    for j in range(y.shape[1]):
        np.testing.assert_allclose(m.ap[j], sk_ap(y[:, j], s[:, j]), rtol=0, atol=TOL)
        np.testing.assert_allclose(m.auroc[j], sk_auc(y[:, j], s[:, j]), rtol=0, atol=TOL)
        np.testing.assert_allclose(m.f1[j], sk_f1(y[:, j], s[:, j], threshold), rtol=0, atol=TOL)


def long_tail_labels(rng, n, c):
    prevalence = np.geomspace(0.4, 0.005, c)
    y = (rng.random((n, c)) < prevalence).astype(np.int8)
    y[rng.choice(n, 2, replace=False)] = 1  # every class has positives
    y[0] = 0  # ... and negatives
    return y


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_random_scores(rng):
    y = long_tail_labels(rng, 2000, 8)
    assert_matches_sklearn(y, rng.random((2000, 8)))


def test_heavily_tied_scores(rng):
    y = long_tail_labels(rng, 1500, 6)
    scores = np.round(rng.random((1500, 6)), 1)  # 11 distinct values: big tie groups
    assert_matches_sklearn(y, scores)


def test_tied_scores_mixed_labels():
    y = np.array([1, 0, 1, 0, 0, 1])[:, None]
    s = np.array([0.8, 0.8, 0.5, 0.5, 0.5, 0.1])[:, None]
    # distinct thresholds 0.8, 0.5, 0.1: recall 1/3, 2/3, 1 at precision 1/2, 2/5, 1/2
    expected = (0.5 + 0.4 + 0.5) / 3
    assert average_precision(y, s)[0] == pytest.approx(expected, abs=TOL)
    assert_matches_sklearn(y, s)


def test_all_tied_column(rng):
    y = long_tail_labels(rng, 300, 3)
    s = rng.random((300, 3))
    s[:, 1] = 0.25
    m = classification_metrics(y, s)
    assert m.ap[1] == pytest.approx(y[:, 1].mean(), abs=TOL)  # one threshold: precision = prevalence
    assert m.auroc[1] == 0.5
    assert_matches_sklearn(y, s)


def test_single_positive(rng):
    y = np.zeros((500, 2), dtype=int)
    y[17, 0] = 1
    y[400, 1] = 1
    s = rng.random((500, 2))
    assert_matches_sklearn(y, s)


def test_float32_scores(rng):
    y = long_tail_labels(rng, 3000, 5)
    s = rng.random((3000, 5)).astype(np.float32)
    s[:, 2] = np.round(s[:, 2], 2)
    assert_matches_sklearn(y, s)


def test_integer_and_bool_inputs(rng):
    y = long_tail_labels(rng, 200, 3).astype(bool)
    s = rng.integers(0, 5, (200, 3))
    assert_matches_sklearn(y.astype(int), s.astype(float))
    np.testing.assert_allclose(average_precision(y, s), average_precision(y.astype(float), s.astype(float)))


def test_one_dimensional_input_gives_zero_dimensional_result():
    y, s = np.array([0, 1, 1, 0]), np.array([0.1, 0.4, 0.35, 0.8])
    ap, auc, f1 = average_precision(y, s), roc_auc(y, s), f1_at_threshold(y, s, 0.3)
    assert ap.shape == auc.shape == f1.shape == ()
    assert float(ap) == pytest.approx(average_precision_score(y, s), abs=TOL)
    assert float(auc) == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert float(f1) == pytest.approx(f1_score(y, s >= 0.3), abs=TOL)


def test_undefined_metrics_are_nan():
    y = np.array([[0, 1], [0, 1], [0, 1]])
    s = np.array([[0.2, 0.3], [0.6, 0.1], [0.9, 0.5]])
    m = classification_metrics(y, s)
    assert np.isnan(m.ap[0]) and np.isnan(m.auroc[0])  # no positive
    assert m.ap[1] == 1.0 and np.isnan(m.auroc[1])  # no negative
    assert m.f1[0] == 0.0  # predicted positives, no actual ones: F1 = 0 as in sklearn
    assert f1_at_threshold(np.zeros(3), np.zeros(3))[()] == 0.0  # zero_division=0


def test_threshold_is_inclusive():
    y, s = np.array([1, 0]), np.array([0.5, 0.49])
    assert f1_at_threshold(y, s, 0.5)[()] == 1.0


def test_blocks_match_single_calls(rng):
    y = long_tail_labels(rng, 400, 4)
    blocks = [rng.random((400, 4)).astype(np.float32) for _ in range(5)]
    for workers in (1, 3):
        results = metrics_for_blocks(y, blocks, threshold=0.3, workers=workers)
        for block, got in zip(blocks, results):
            want = classification_metrics(y, block, 0.3)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


labels_and_scores = st.integers(1, 40).flatmap(lambda n: st.tuples(
    hnp.arrays(np.int8, (n, 2), elements=st.integers(0, 1)),
    hnp.arrays(np.float64, (n, 2), elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 1.0])
               | st.floats(0, 1, allow_nan=False, width=32)),
))


@settings(max_examples=200, deadline=None)
@given(labels_and_scores)
def test_property_matches_sklearn(data):
    y, s = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on columns without positives
        assert_matches_sklearn(y, s)


@pytest.mark.parametrize("y, s, message", [
    (np.zeros((3, 2)), np.zeros((3, 3)), "same shape"),
    (np.zeros((0, 2)), np.zeros((0, 2)), "no samples"),
    (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "1-D .* or 2-D"),
    (np.array([0, 1, 2]), np.zeros(3), "only 0 and 1.*value 2"),
    (np.array([0, 1, np.nan]), np.zeros(3), "found NaN at row 2"),
    (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.2]), "finite.*row 1"),
    (np.array([[0, 1], [1, 0]]), np.array([[0.1, np.inf], [0.2, 0.3]]), "finite.*row 0, column 1"),
    (np.array(["a", "b"]), np.zeros(2), "binary 0/1 numbers"),
    (np.array([0, 1]), np.array(["x", "y"]), "real numbers"),
])
def test_validation_errors(y, s, message):
    for fn in (average_precision, roc_auc, f1_at_threshold, classification_metrics):
        with pytest.raises(ValueError, match=message):
            fn(y, s)


def test_threshold_and_workers_validation():
    with pytest.raises(ValueError, match="threshold"):
        f1_at_threshold([0, 1], [0.1, 0.2], float("nan"))
    with pytest.raises(ValueError, match="workers"):
        metrics_for_blocks([0, 1], [[0.1, 0.2]], workers=0)
    with pytest.raises(ValueError, match="same shape"):
        metrics_for_blocks([0, 1], [[0.1, 0.2, 0.3]])
