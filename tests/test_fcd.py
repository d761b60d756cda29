"""FCD on three hand curves and label statistics on a hand-countable label matrix."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrprune.analysis import fcd

CURVES = pd.DataFrame({"A": [0.0, 0.0, 0.0], "B": [0.0, -0.3, -0.4], "C": [-0.1, -0.1, -0.1]},
                      index=pd.Index([0.05, 0.5, 0.95], name="sparsity"))

# Five images: {A}, {A,B}, {A,B,C}, {C}, {B}.  M = Y^T Y = [[3,2,1],[2,3,1],[1,1,2]].
#   label-weighted f = column sums of M = (6, 6, 4)
#     (A: images 1,2,3 carry 1+2+3 labels; B: 2+3+1; C: 3+1)
#   IoU_label(A,B) = 2/(6+6-2) = 1/5, (A,C) = 1/(6+4-1) = 1/9, (B,C) = 1/9
#   plain f = (3, 3, 2); IoU(A,B) = |{2,3}|/|{1,2,3,5}| = 1/2, (A,C) = 1/4, (B,C) = 1/4
LABELS = pd.DataFrame({
    "image_id": ["i1", "i2", "i3", "i4", "i5"],
    "patient_id": ["p1", "p1", "p2", "p3", "p3"],
    "A": [1, 1, 1, 0, 0],
    "B": [0, 1, 1, 0, 1],
    "C": [0, 0, 1, 1, 0],
})


def test_curve_distances_by_hand():
    pairs = fcd.fcd_pairs(CURVES, LABELS, ["A", "B", "C"], "euclidean", "label")
    assert list(zip(pairs["class_a"], pairs["class_b"])) == [("A", "B"), ("A", "C"), ("B", "C")]
    np.testing.assert_allclose(pairs["fcd"], [0.5, math.sqrt(0.03), math.sqrt(0.14)], rtol=1e-12)
    mse = fcd.fcd_pairs(CURVES, LABELS, ["A", "B", "C"], "mse", "label")
    np.testing.assert_allclose(mse["fcd"], [0.25 / 3, 0.03 / 3, 0.14 / 3], rtol=1e-12)


def test_label_weighted_statistics_by_hand():
    f, iou = fcd.label_statistics(LABELS[["A", "B", "C"]].to_numpy(), "label")
    np.testing.assert_array_equal(f, [6, 6, 4])
    assert iou[0, 1] == pytest.approx(1 / 5)
    assert iou[0, 2] == pytest.approx(1 / 9)
    assert iou[1, 2] == pytest.approx(1 / 9)
    pairs = fcd.fcd_pairs(CURVES, LABELS, ["A", "B", "C"])
    np.testing.assert_allclose(pairs["iou"], [1 / 5, 1 / 9, 1 / 9])
    np.testing.assert_allclose(pairs["iou_quarter"], [(1 / 5) ** 0.25, (1 / 9) ** 0.25, (1 / 9) ** 0.25])
    np.testing.assert_allclose(pairs["abs_dlnf"], [0.0, math.log(1.5), math.log(1.5)], atol=1e-15)


def test_plain_statistics_by_hand():
    f, iou = fcd.label_statistics(LABELS[["A", "B", "C"]].to_numpy(), "plain")
    np.testing.assert_array_equal(f, [3, 3, 2])
    pairs = fcd.fcd_pairs(CURVES, LABELS, ["A", "B", "C"], weighting="plain")
    np.testing.assert_allclose(pairs["iou"], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(pairs["abs_dlnf"], [0.0, math.log(1.5), math.log(1.5)], atol=1e-15)


def test_id_columns_are_not_classes():
    # Same result from the DataFrame (with id columns) and the bare class matrix.
    a = fcd.fcd_pairs(CURVES, LABELS, ["A", "B", "C"])
    b = fcd.fcd_pairs(CURVES, LABELS[["A", "B", "C"]].to_numpy(), ["A", "B", "C"])
    pd.testing.assert_frame_equal(a, b)


def test_correlations_equal_scipy():
    rng = np.random.default_rng(3)
    classes = [f"c{i}" for i in range(6)]
    curves = pd.DataFrame(rng.normal(size=(19, 6)), columns=classes)
    y = (rng.random((60, 6)) < np.linspace(0.5, 0.05, 6)).astype(int)
    y[0] = 1  # every class has a positive
    pairs = fcd.fcd_pairs(curves, y, classes)
    assert len(pairs) == 15
    corr = fcd.fcd_correlations(pairs)
    for key, col in (("freq", "abs_dlnf"), ("iou", "iou_quarter")):
        pr = stats.pearsonr(pairs["fcd"], pairs[col])
        sr = stats.spearmanr(pairs["fcd"], pairs[col])
        assert corr[key].n == 15
        assert corr[key].r == pytest.approx(pr.statistic, abs=1e-12)
        assert corr[key].p_r == pytest.approx(pr.pvalue, rel=1e-9)
        assert corr[key].rho == pytest.approx(sr.statistic, abs=1e-12)
        assert corr[key].p_rho == pytest.approx(sr.pvalue, rel=1e-9)


def test_absent_class_gives_undefined_pairs_not_errors():
    labels = LABELS.assign(D=0)
    curves = CURVES.assign(D=[0.0, -0.5, -1.0])
    pairs = fcd.fcd_pairs(curves, labels, ["A", "B", "C", "D"])
    d = pairs[pairs["class_b"] == "D"]
    assert d["abs_dlnf"].isna().all()  # ln(0) undefined
    assert (d["iou"] == 0).all()  # D never co-occurs; the union is not empty
    assert fcd.fcd_correlations(pairs)["freq"].n == 3
