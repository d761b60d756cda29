"""Forgettability curves, first drop, dAP@95 and the frequency correlations on hand tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrprune.analysis import forgetting
from cxrprune.core.errors import DataError

LEVELS = (0.0, 0.5, 0.9, 0.95)

# AP per (seed, class) at LEVELS. Relative changes (worked by hand):
#   A: seed 0 (1.0): -0.1, -0.3, -0.5   seed 1 (0.5): 0.0, -0.1, -0.6  -> median -0.05, -0.2*, -0.55
#   B: seed 0 (0.8):  0.0, -0.5, -0.75  seed 1 (0.4): -0.1, -0.25, -0.75 -> median -0.05, -0.375, -0.75
#   C: seed 0 (0.6):  0.0,  0.0, -0.05  seed 1 (0.3): 0.0, -0.1, -0.1   -> median 0.0, -0.05, -0.075
# (*) -0.2 up to the 1e-12 guard, i.e. not strictly below -0.2: A's first drop is 0.95.
AP = {
    (0, "A"): (1.0, 0.9, 0.7, 0.5),
    (1, "A"): (0.5, 0.5, 0.45, 0.2),
    (0, "B"): (0.8, 0.8, 0.4, 0.2),
    (1, "B"): (0.4, 0.36, 0.3, 0.1),
    (0, "C"): (0.6, 0.6, 0.6, 0.57),
    (1, "C"): (0.3, 0.3, 0.27, 0.27),
}
EXPECTED = {
    "A": (-0.05, -0.2, -0.55),
    "B": (-0.05, -0.375, -0.75),
    "C": (0.0, -0.05, -0.075),
}


def hand_table() -> pd.DataFrame:
    rows = []
    for (seed, cls), aps in AP.items():
        for k, ap in zip(LEVELS, aps):
            rows.append({"seed": seed, "method": "l1", "level": k, "class_name": cls, "ap": ap,
                         "auroc": 0.5, "f1": 0.1})
            # Random-pruning rows must be ignored: they would change every curve.
            rows.append({"seed": seed, "method": "random", "level": k, "class_name": cls,
                         "ap": ap * (1 - k), "auroc": 0.5, "f1": 0.1})
    return pd.DataFrame(rows)


def test_relative_change_matches_definition():
    rel = forgetting.relative_change(hand_table(), "l1")
    assert sorted(rel["level"].unique()) == [0.5, 0.9, 0.95]  # k = 0 is the reference, not a point
    row = rel[(rel["seed"] == 0) & (rel["class_name"] == "B") & (rel["level"] == 0.9)].iloc[0]
    assert row["rel_dap"] == pytest.approx((0.4 - 0.8) / (0.8 + 1e-12), rel=1e-15)


def test_curves_are_median_over_seeds():
    curves = forgetting.forgettability_curves(forgetting.relative_change(hand_table()), ["C", "B", "A"])
    assert list(curves.columns) == ["C", "B", "A"]
    assert list(curves.index) == [0.5, 0.9, 0.95]
    for cls, values in EXPECTED.items():
        np.testing.assert_allclose(curves[cls].to_numpy(), values, rtol=1e-9, atol=1e-12)


def test_median_not_mean_with_three_seeds():
    rows = [{"seed": s, "method": "l1", "level": k, "class_name": "A", "ap": ap}
            for s, (a0, a1) in enumerate([(1.0, 0.9), (1.0, 0.8), (1.0, 0.2)])
            for k, ap in ((0.0, a0), (0.5, a1))]
    curves = forgetting.forgettability_curves(forgetting.relative_change(pd.DataFrame(rows)))
    assert curves.loc[0.5, "A"] == pytest.approx(-0.2, rel=1e-9)  # median of -0.1, -0.2, -0.8 (mean -0.367)


def test_first_drop_and_dap95_on_hand_table():
    curves = forgetting.forgettability_curves(forgetting.relative_change(hand_table()), ["A", "B", "C"])
    drop = forgetting.first_drop(curves, 0.2)
    assert drop["A"] == 0.95  # -0.2 at 0.9 is not strictly below -0.2
    assert drop["B"] == 0.9
    assert math.isnan(drop["C"])  # never reached: missing, not an invented value
    dap = forgetting.dap_at(curves, 0.95)
    np.testing.assert_allclose(dap[["A", "B", "C"]].to_numpy(), [-0.55, -0.75, -0.075], rtol=1e-9)


def test_first_drop_is_strict_at_exactly_minus_threshold():
    curves = pd.DataFrame({"X": [-0.1, -0.2, -0.2000001], "Y": [-0.2, -0.2, -0.2], "Z": [-0.25, 0.0, -0.9]},
                          index=pd.Index([0.5, 0.9, 0.95], name="level"))
    drop = forgetting.first_drop(curves, 0.2)
    assert drop["X"] == 0.95
    assert math.isnan(drop["Y"])
    assert drop["Z"] == 0.5  # the first crossing, even if the curve recovers later


def test_first_drop_ignores_undefined_points():
    curves = pd.DataFrame({"X": [np.nan, -0.5]}, index=pd.Index([0.5, 0.9], name="level"))
    assert forgetting.first_drop(curves, 0.2)["X"] == 0.9


def test_dap_at_missing_level_is_nan():
    curves = pd.DataFrame({"X": [-0.1, -0.3]}, index=pd.Index([0.5, 0.9], name="level"))
    assert forgetting.dap_at(curves, 0.95).isna().all()
    assert forgetting.dap_at(curves, 0.9000000000000001)["X"] == -0.3  # float noise in a level is tolerated


def test_relative_change_against_a_chance_level_and_of_another_metric():
    chance = pd.Series({"A": 0.1, "B": 0.8, "C": 0.0})
    rel = forgetting.relative_change(hand_table(), "l1", chance)
    row = rel[(rel["seed"] == 0) & (rel["class_name"] == "A") & (rel["level"] == 0.9)].iloc[0]
    assert row["rel_dap"] == pytest.approx((0.7 - 1.0) / (1.0 - 0.1), rel=1e-12)  # retained 2/3, minus 1
    b = rel[rel["class_name"] == "B"]
    assert b.loc[b["seed"] == 0, "rel_dap"].isna().all()  # AP_0 = 0.8 = chance: nothing above chance to lose
    assert b.loc[b["seed"] == 1, "rel_dap"].isna().all()  # AP_0 = 0.4 < chance
    c = rel[rel["class_name"] == "C"].set_index(["seed", "level"])["rel_dap"]
    plain = forgetting.relative_change(hand_table()).query("class_name == 'C'").set_index(["seed", "level"])
    np.testing.assert_allclose(c, plain["rel_dap"], rtol=1e-9)  # chance 0: the paper's change
    roc = forgetting.relative_change(hand_table().assign(auroc=lambda d: 0.5 + d["ap"] / 4), "l1",
                                     pd.Series(0.5, index=["A", "B", "C"]), metric="auroc")
    assert {"auroc", "auroc0"} <= set(roc.columns)
    # (A_k - 0.5) / (A_0 - 0.5) - 1 = AP_k / AP_0 - 1 here: the paper's change of AP.
    np.testing.assert_allclose(roc["rel_dap"], forgetting.relative_change(hand_table())["rel_dap"], rtol=1e-9)


def test_missing_dense_row_is_an_error():
    table = hand_table()
    table = table[~((table["seed"] == 1) & (table["class_name"] == "B") & (table["level"] == 0.0))]
    with pytest.raises(DataError, match="no k=0 row"):
        forgetting.relative_change(table)


def test_missing_columns_and_method_are_errors():
    with pytest.raises(DataError, match="lacks columns"):
        forgetting.relative_change(hand_table().drop(columns="ap"))
    with pytest.raises(DataError, match="no rows for method"):
        forgetting.relative_change(hand_table(), "magnitude")


def test_train_counts_are_column_sums():
    labels = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["1", "1", "2"],
                           "A": [1, 0, 1], "B": [0, 0, 1]}).astype({"A": "int8", "B": "int8"})
    counts = forgetting.train_counts(labels, ["A", "B"])
    assert counts.to_dict() == {"A": 2, "B": 1}
    with pytest.raises(DataError):
        forgetting.train_counts(labels, ["A", "Z"])


def test_correlation_with_frequency_equals_scipy_and_reports_exclusions():
    values = pd.Series({"A": 0.9, "B": 0.7, "C": np.nan, "D": 0.8, "E": 0.5, "F": 0.6, "G": 0.4})
    counts = pd.Series({"A": 5000, "B": 900, "C": 400, "D": 300, "E": 120, "F": 60, "G": 0})
    c = forgetting.correlate_with_frequency(values, counts)
    keep = ["A", "B", "D", "E", "F"]  # C: not reached; G: ln(0) undefined
    x = values[keep].to_numpy()
    y = np.log(counts[keep].to_numpy(dtype=float))
    assert c.n == 5
    assert set(c.excluded) == {"C", "G"}
    pr, sr = stats.pearsonr(x, y), stats.spearmanr(x, y)
    assert c.r == pytest.approx(pr.statistic, abs=1e-12)
    assert c.p_r == pytest.approx(pr.pvalue, rel=1e-9)
    assert c.rho == pytest.approx(sr.statistic, abs=1e-12)
    assert c.p_rho == pytest.approx(sr.pvalue, rel=1e-9)


def test_correlation_undefined_for_too_few_or_constant_points():
    two = forgetting.correlate_with_frequency(pd.Series({"A": 0.9, "B": np.nan, "C": 0.7}),
                                              pd.Series({"A": 10, "B": 20, "C": 30}))
    assert two.n == 2 and math.isnan(two.r) and math.isnan(two.rho)
    flat = forgetting.correlate(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert flat.n == 4 and math.isnan(flat.r)


def test_long_curves_layout():
    curves = forgetting.forgettability_curves(forgetting.relative_change(hand_table()), ["A", "B", "C"])
    long = forgetting.long_curves(curves)
    assert list(long.columns) == ["level", "class_name", "rel_dap"]
    assert len(long) == 9
    assert list(long["class_name"][:3]) == ["A", "A", "A"]
    assert long.set_index(["level", "class_name"]).loc[(0.9, "B"), "rel_dap"] == pytest.approx(-0.375)
