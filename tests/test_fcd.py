"""FCD on three hand curves, label statistics on a hand-countable label matrix, and the Mantel
p-values against a brute-force enumeration of class permutations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrprune.analysis import fcd, forgetting

CURVES = pd.DataFrame({"A": [0.0, 0.0, 0.0], "B": [0.0, -0.3, -0.4], "C": [-0.1, -0.1, -0.1]},
                      index=pd.Index([0.05, 0.5, 0.95], name="level"))

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


def test_statistics_equal_scipy_and_p_values_are_mantel():
    rng = np.random.default_rng(3)
    classes = [f"c{i}" for i in range(6)]
    curves = pd.DataFrame(rng.normal(size=(19, 6)), columns=classes)
    y = (rng.random((60, 6)) < np.linspace(0.5, 0.05, 6)).astype(int)
    y[0] = 1  # every class has a positive
    pairs = fcd.fcd_pairs(curves, y, classes)
    assert len(pairs) == 15
    tests = fcd.fcd_correlations(pairs)
    assert tests.classes == tuple(classes) and tests.excluded == ()
    assert tests.exact and tests.permutations == math.factorial(6)  # 720 <= MANTEL_PERMUTATIONS: enumerated
    assert tests.p_method == "mantel, all 720 class permutations (exact)"
    for key, col in (("freq", "abs_dlnf"), ("iou", "iou_quarter")):
        pr = stats.pearsonr(pairs["fcd"], pairs[col])
        sr = stats.spearmanr(pairs["fcd"], pairs[col])
        c = getattr(tests, key)
        assert c.n == 15
        assert c.r == pytest.approx(pr.statistic, abs=1e-12)
        assert c.rho == pytest.approx(sr.statistic, abs=1e-12)
        # Not the textbook p-values, which treat the 15 pairs of 6 classes as independent.
        assert c.p_rho != pytest.approx(sr.pvalue) and c.p_r != pytest.approx(pr.pvalue)


# Five classes: hand curves over three levels and hand labels with four different frequencies.
CURVES5 = pd.DataFrame({"A": [0.0, -0.1, -0.2], "B": [0.0, -0.3, -0.9], "C": [-0.1, -0.2, -0.5],
                        "D": [0.0, 0.0, -0.1], "E": [-0.2, -0.6, -1.0]},
                       index=pd.Index([0.05, 0.5, 0.95], name="level"))
LABELS5 = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 1, 0],
                    [0, 1, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0], [1, 0, 0, 0, 1], [1, 1, 0, 0, 0]])


def test_p_values_equal_brute_force_class_permutations():
    """The oracle relabels the classes' curves by every one of the 5! permutations, recomputes
    every pair through fcd_pairs and counts correlations at least as extreme as the observed one."""
    classes = list(CURVES5.columns)
    observed = fcd.fcd_pairs(CURVES5, LABELS5, classes)
    tests = fcd.fcd_correlations(observed)

    def partial(p: pd.DataFrame) -> float:
        rxy, rxz, ryz = (stats.spearmanr(p[a], p[b]).statistic
                         for a, b in (("fcd", "abs_dlnf"), ("fcd", "iou_quarter"), ("abs_dlnf", "iou_quarter")))
        return (rxy - rxz * ryz) / math.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))

    def statistics(p: pd.DataFrame) -> dict[str, float]:
        return {"freq_rho": stats.spearmanr(p["fcd"], p["abs_dlnf"]).statistic,
                "freq_r": stats.pearsonr(p["fcd"], p["abs_dlnf"]).statistic,
                "iou_rho": stats.spearmanr(p["fcd"], p["iou_quarter"]).statistic,
                "iou_r": stats.pearsonr(p["fcd"], p["iou_quarter"]).statistic,
                "partial": partial(p)}

    obs = statistics(observed)
    extreme = dict.fromkeys(obs, 0)
    perms = list(itertools.permutations(range(len(classes))))
    for perm in perms:
        relabelled = CURVES5.iloc[:, list(perm)].set_axis(classes, axis=1)
        for k, v in statistics(fcd.fcd_pairs(relabelled, LABELS5, classes)).items():
            extreme[k] += abs(v) >= abs(obs[k]) - 1e-10
    brute = {k: n / len(perms) for k, n in extreme.items()}
    assert 0 < min(brute.values()) and max(brute.values()) < 1  # the case separates the permutations
    assert tests.freq.rho == pytest.approx(obs["freq_rho"], abs=1e-12)
    assert tests.freq.p_rho == pytest.approx(brute["freq_rho"], abs=1e-12)
    assert tests.freq.p_r == pytest.approx(brute["freq_r"], abs=1e-12)
    assert tests.iou.p_rho == pytest.approx(brute["iou_rho"], abs=1e-12)
    assert tests.iou.p_r == pytest.approx(brute["iou_r"], abs=1e-12)
    assert tests.freq_given_iou_rho == pytest.approx(obs["partial"], abs=1e-12)
    assert tests.freq_given_iou_p == pytest.approx(brute["partial"], abs=1e-12)


def test_twenty_classes_use_the_seeded_monte_carlo_test():
    rng = np.random.default_rng(11)
    classes = [f"c{i}" for i in range(20)]
    curves = pd.DataFrame(rng.normal(size=(19, 20)), columns=classes)
    y = (rng.random((500, 20)) < np.geomspace(0.5, 0.01, 20)).astype(int)
    y[:20] = np.eye(20, dtype=int)  # every class has a positive
    pairs = fcd.fcd_pairs(curves, y, classes)
    a, b = fcd.fcd_correlations(pairs), fcd.fcd_correlations(pairs)
    assert a == b  # seeded
    assert not a.exact and a.permutations == fcd.MANTEL_PERMUTATIONS
    assert a.p_method == f"mantel, {fcd.MANTEL_PERMUTATIONS} class permutations (seed {fcd.MANTEL_SEED})"
    assert a.freq.p_rho >= 1 / (fcd.MANTEL_PERMUTATIONS + 1)  # the observed arrangement counts once


def test_absent_class_gives_undefined_pairs_not_errors():
    labels = LABELS.assign(D=0)
    curves = CURVES.assign(D=[0.0, -0.5, -1.0])
    pairs = fcd.fcd_pairs(curves, labels, ["A", "B", "C", "D"])
    d = pairs[pairs["class_b"] == "D"]
    assert d["abs_dlnf"].isna().all()  # ln(0) undefined
    assert (d["iou"] == 0).all()  # D never co-occurs; the union is not empty
    tests = fcd.fcd_correlations(pairs)
    # A Mantel test needs every pair of its classes: D leaves with all its pairs, from both tests.
    assert tests.freq.n == tests.iou.n == 3
    assert tests.classes == ("A", "B", "C") and tests.excluded == ("D",) and tests.freq.excluded == ("D",)
    assert tests.exact and tests.permutations == 6


def test_testable_classes_drop_the_class_with_most_undefined_pairs_first():
    pairs = pd.DataFrame({"class_a": ["A", "A", "A", "B", "B", "C"], "class_b": ["B", "C", "D", "C", "D", "D"],
                          "fcd": [1.0, 2.0, np.nan, 3.0, np.nan, np.nan],
                          "abs_dlnf": [0.1, 0.2, 0.3, np.nan, 0.5, 0.6], "iou_quarter": 0.5})
    # D has three undefined pairs and goes first; then (B, C) is still undefined: B goes (first on the tie).
    assert fcd.testable_classes(pairs) == (["A", "C"], ["B", "D"])
    tests = fcd.fcd_correlations(pairs)
    assert tests.freq.n == 1 and math.isnan(tests.freq.rho) and math.isnan(tests.freq.p_rho)
    assert tests.p_method.startswith("mantel, not run")


def test_curve_noise_is_the_seed_sd_averaged_over_levels():
    # A's two seeds at levels 0.5, 0.9, 0.95: -0.1/0.0, -0.3/-0.1, -0.5/-0.6; B constant over seeds
    a = np.array([[-0.1, -0.3, -0.5], [0.0, -0.1, -0.6]])
    rel = pd.DataFrame([{"seed": s, "level": k, "class_name": c, "rel_dap": v}
                        for c, table in (("A", a), ("B", np.full((2, 3), -0.2)))
                        for s in range(2) for k, v in zip((0.5, 0.9, 0.95), table[s])])
    noise = fcd.curve_noise(rel, ["B", "A"])
    assert list(noise.index) == ["B", "A"] and noise["B"] == 0.0
    assert noise["A"] == pytest.approx(np.std(a, axis=0, ddof=1).mean(), rel=1e-12)
    assert math.isnan(fcd.curve_noise(rel[rel["seed"] == 0], ["A"])["A"])  # no scatter to measure with one seed


def test_noise_rho_is_spearman_of_fcd_with_the_pairs_summed_noise():
    pairs = fcd.fcd_pairs(CURVES, LABELS, ["A", "B", "C"])
    noise = pd.Series({"A": 0.01, "B": 0.2, "C": 0.05})
    summed = [0.21, 0.06, 0.25]  # A+B, A+C, B+C
    assert fcd.noise_rho(pairs, noise) == pytest.approx(stats.spearmanr(pairs["fcd"], summed).statistic, rel=1e-12)
    assert math.isnan(fcd.noise_rho(pairs, pd.Series({"A": 0.1, "B": 0.1, "C": 0.1})))  # constant: undefined


def test_a_noisy_class_sits_far_from_classes_with_the_same_expected_curve():
    """Five classes forget identically in expectation; their seeds scatter by 0.02 to 0.4. The
    median curves then sit apart by noise alone, and FCD ranks the pairs by their noise."""
    rng = np.random.default_rng(0)
    levels = np.round(np.arange(0.05, 1.0, 0.05), 2)
    expected = -levels ** 3
    scatter = {"A": 0.02, "B": 0.05, "C": 0.1, "D": 0.2, "E": 0.4}
    rows = [{"seed": s, "level": k, "class_name": c, "rel_dap": expected[i] + sd * rng.standard_normal()}
            for c, sd in scatter.items() for s in range(5) for i, k in enumerate(levels)]
    rel = pd.DataFrame(rows)
    curves = forgetting.forgettability_curves(rel, list(scatter))
    noise = fcd.curve_noise(rel, list(scatter))
    assert list(noise.sort_values().index) == list(scatter)  # the measured noise ranks the classes as planted
    labels = pd.DataFrame(np.eye(5, dtype=int), columns=list(scatter))
    pairs = fcd.fcd_pairs(curves, labels, list(scatter))
    assert fcd.noise_rho(pairs, noise) > 0.8
