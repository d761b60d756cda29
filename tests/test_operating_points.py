"""Operating points per compression method, the per-class loss test, efficiency aggregation
and the Pareto outputs, on hand-made tables with several methods (``int8``/``fp16`` with one
level, as the prune stage writes them)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrprune.analysis import cost_accuracy, evaluate, summary
from cxrprune.analysis import operating_points as op
from cxrprune.compression.methods import method_levels
from cxrprune.core import config
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.core.layout import Layout

CLASSES = ["A", "B", "C"]
SEEDS = [0, 1, 2, 3, 4]
LEVELS = [0.0, 0.25, 0.5, 0.75]
# Zero-mean per-seed noise patterns: a level with only noise has a mean change of exactly 0.
NOISE = np.array([[1, -1, 2, -2, 0], [0, 2, -1, 1, -2], [-2, 0, 1, 2, -1]], dtype=float) * 0.004


def _ap0(seed: int, j: int) -> float:
    return 0.5 + 0.05 * j + 0.01 * seed


# Relative AP change per (method, level) and class, before the noise. l1: at 0.5 class A loses
# 30% while B gains as much (mAP unchanged: safe on average, not for A); at 0.75 all lose.
# random: A loses 50% at 0.25 (mAP significantly lower at once). int8: noise only.
# fp16: C loses 30% while A gains (safe on average at its one level, not for C).
REL = {
    ("l1", 0.25): [0, 0, 0], ("l1", 0.5): [-0.3, 0.3 * 0.55 / 0.6, 0], ("l1", 0.75): [-0.6, -0.5, -0.4],
    ("random", 0.0): [0, 0, 0], ("random", 0.25): [-0.5, 0, 0], ("random", 0.5): [-0.6, -0.2, -0.2],
    ("random", 0.75): [-0.7, -0.6, -0.6],
    ("int8", 0.0): [0, 0, 0], ("fp16", 0.0): [0.3 * 0.65 / 0.55, 0, -0.3],
}
METHODS = {"l1": LEVELS, "random": LEVELS, "int8": [0.0], "fp16": [0.0]}


def _per_class() -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        for j, c in enumerate(CLASSES):
            base = _ap0(seed, j)
            rows.append((seed, "l1", 0.0, c, base))
            for (m, k), rel in REL.items():
                noise = 0.0 if (m == "random" and k == 0.0) else NOISE[j, seed] * (1 + 3 * k)
                rows.append((seed, m, k, c, base * (1 + rel[j] + noise)))
    df = pd.DataFrame(rows, columns=["seed", "method", "level", "class_name", "ap"])
    return df.assign(auroc=0.7, f1=0.4)


def _evaluation(per_class: pd.DataFrame, test: str = "ttest") -> dict:
    maps = evaluate.map_table(per_class)
    by_method = evaluate.paired_tests_by_method(maps, METHODS, test, "holm", 0.05)
    return json.loads(json.dumps(evaluate.summarize(maps, by_method["l1"], config.EvaluateConfig(test=test),
                                                    by_method)))


def _efficiency() -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        blocks = [("dense", 0.0)] + [(m, k) for m, levels in METHODS.items() for k in levels]
        for m, k in blocks:
            size = {"int8": 1e6, "fp16": 2e6}.get(m, 4e6 * (1 - k) + 5e4)
            rows.append({"seed": seed, "method": m, "level": k, "nonzero_params": 1e6 * (1 - k) + 7,
                         "bytes": size + seed, "engine": "onnxruntime-cpu" if m == "int8" else "torch-cpu",
                         "threads": 1,
                         "latency_ms_b1": (5.0 - 2 * k - 3 * (m == "int8")) if seed == 0 else np.nan,
                         "latency_ratio": (1.0 - 0.4 * k) if seed == 0 else np.nan,
                         "latency_ratio_lo": (0.9 - 0.4 * k) if seed == 0 else np.nan,
                         "latency_ratio_hi": (1.1 - 0.4 * k) if seed == 0 else np.nan,
                         "images_per_s_b64": (200.0 + k) if seed == 0 else np.nan})
    return pd.DataFrame(rows, columns=cost_accuracy.EFFICIENCY_COLUMNS)


# --- levels of a method ---------------------------------------------------------------------


def test_method_levels():
    assert method_levels("int8", LEVELS) == [0.0] and method_levels("bf16", LEVELS) == [0.0]
    assert method_levels("fp16", [0.0, 0.5]) == [0.0]
    assert method_levels("l1", LEVELS) == LEVELS and method_levels("channel", [0.0, 0.3]) == [0.0, 0.3]


def test_class_tolerance_is_validated():
    assert config.AnalyzeConfig().class_tolerance == 0.05
    with pytest.raises(ConfigError, match="analyze.class_tolerance"):
        config.AnalyzeConfig(class_tolerance=0.0)


# --- rule (a): every method against the dense model -----------------------------------------


def test_paired_test_per_method_against_the_dense_model():
    per_class = _per_class()
    maps = evaluate.map_table(per_class)
    res = evaluate.paired_tests_by_method(maps, METHODS, "ttest", "holm", 0.05)
    dense = maps[(maps["method"] == "l1") & (maps["level"] == 0)].sort_values("seed")["map"].to_numpy()

    def mapped(m, k):
        return maps[(maps["method"] == m) & (maps["level"] == k)].sort_values("seed")["map"].to_numpy()

    # int8 is tested at its one level, 0, against l1@0 (scipy's paired t-test, one family of 1).
    t8 = res["int8"].table
    assert t8["sparsity"].tolist() == [0.0]
    want = stats.ttest_rel(mapped("int8", 0.0), dense, alternative="less")
    assert t8["p_raw"].iloc[0] == pytest.approx(want.pvalue) and t8["p_adj"].iloc[0] == pytest.approx(want.pvalue)
    assert res["int8"].max_safe_sparsity == 0.0
    # random at 0 equals the dense model at every seed: not tested, so Holm runs over 3 levels.
    tr = res["random"].table
    assert tr["sparsity"].tolist() == [0.25, 0.5, 0.75]
    p = [stats.ttest_rel(mapped("random", k), dense, alternative="less").pvalue for k in (0.25, 0.5, 0.75)]
    np.testing.assert_allclose(tr["p_raw"], p)
    np.testing.assert_allclose(tr["p_adj"], evaluate.holm(p))
    assert res["random"].max_safe_sparsity == 0.0  # 0.25 is already significantly worse
    assert res["l1"].max_safe_sparsity == 0.5 and res["l1"].table["sparsity"].tolist() == [0.25, 0.5, 0.75]

    doc = evaluate.summarize(maps, res["l1"], config.EvaluateConfig(test="ttest"), res)
    assert doc["max_safe_sparsity"] == 0.5 and len(doc["paired_tests"]) == 3  # the existing keys: l1
    assert set(doc["methods"]) == set(METHODS)
    assert doc["methods"]["int8"]["levels"] == [0.0] and doc["methods"]["random"]["levels"] == LEVELS


def test_a_method_whose_lowest_level_is_significant_has_no_safe_level():
    maps = pd.DataFrame({"seed": [0, 1, 2] * 2, "method": ["l1"] * 3 + ["int8"] * 3, "level": 0.0,
                         "map": [0.6, 0.62, 0.61, 0.4, 0.43, 0.41], "mean_auroc": 0.7})
    res = evaluate.paired_test(maps, "int8", "ttest", "holm", 0.05)
    assert res.table["significant"].tolist() == [True] and res.max_safe_sparsity is None
    assert evaluate.max_safe_level([0.0, 0.5], [True, False]) is None
    assert evaluate.max_safe_level([0.0, 0.5, 0.9], [False, False, True]) == 0.5


def test_per_method_tests_check_levels_and_seeds():
    maps = evaluate.map_table(_per_class())
    with pytest.raises(DataError, match=r"'int8' has levels \[0.0\], expected \[0.0, 0.5\]"):
        evaluate.paired_tests_by_method(maps, {**METHODS, "int8": [0.0, 0.5]})
    with pytest.raises(DataError, match="method 'fp16' has seeds"):
        evaluate.paired_test(maps[~((maps["method"] == "fp16") & (maps["seed"] == 4))], "fp16")


# --- rule (b): the per-class test -----------------------------------------------------------


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_class_loss_test_matches_scipy_and_holm(test):
    rng = np.random.default_rng(3)
    n_seeds, tol, alpha = 8, 0.05, 0.05
    shift = np.array([0.0, -0.06, -0.2, -0.12, 0.03])  # true mean relative change per class
    rel = shift + rng.normal(0, 0.03, (n_seeds, len(shift)))
    table = pd.DataFrame([{"seed": s, "method": "l1", "level": 0.5, "class_name": f"c{j}", "rel_dap": rel[s, j]}
                          for s in range(n_seeds) for j in range(len(shift))])
    got = op.class_loss_tests(table, tol, test, "holm", alpha).set_index("class_name")
    p = []
    for j in range(len(shift)):
        x = rel[:, j] + tol  # H1: the relative change is below -tol
        res = stats.ttest_1samp(x, 0.0, alternative="less") if test == "ttest" else \
            stats.wilcoxon(x, alternative="less")
        p.append(res.pvalue)
    np.testing.assert_allclose(got["p_raw"].to_numpy(), p, rtol=1e-10)
    np.testing.assert_allclose(got["median_rel_dap"].to_numpy(), np.median(rel, axis=0))
    # Holm's step-down rejection, as defined: the i-th smallest p against alpha / (m - i).
    reject = np.zeros(len(p), dtype=bool)
    for i, j in enumerate(np.argsort(p)):
        if p[j] > alpha / (len(p) - i):
            break
        reject[j] = True
    assert got["loses"].tolist() == reject.tolist()
    assert reject.any() and not reject.all()  # the data exercise both outcomes
    none = op.class_loss_tests(table, tol, test, "none", alpha)
    assert none["loses"].tolist() == (np.array(p) <= alpha).tolist()


def test_class_loss_test_degenerate_blocks():
    same = pd.DataFrame({"seed": [0, 1, 0, 1], "method": "random", "level": 0.0, "class_name": ["a", "a", "b", "b"],
                         "rel_dap": 0.0})
    got = op.class_loss_tests(same, 0.05)
    assert got["p_raw"].tolist() == [1.0, 1.0] and not got["loses"].any()  # the dense model itself
    one = same[same["seed"] == 0].assign(rel_dap=-0.9)
    got = op.class_loss_tests(one, 0.05)
    assert got["p_raw"].isna().all() and not got["loses"].any()  # no paired test with one seed
    assert "1 seed" in op.power_note("ttest", 1, 20, 0.05, "holm")
    assert "no class can be found to lose" in op.power_note("wilcoxon", 5, 20, 0.05, "holm")
    assert op.power_note("ttest", 5, 20, 0.05, "holm") is None


def test_relative_change_is_against_l1_at_zero_of_the_same_seed():
    per_class = _per_class()
    rel = op.relative_to_dense(per_class)
    assert not ((rel["method"] == "l1") & (rel["level"] == 0)).any()
    row = rel[(rel["method"] == "fp16") & (rel["seed"] == 2) & (rel["class_name"] == "C")].iloc[0]
    assert row["rel_dap"] == pytest.approx(-0.3 + NOISE[2, 2], abs=1e-9)
    with pytest.raises(DataError, match="dense model"):
        op.relative_to_dense(per_class[per_class["method"] != "l1"])


# --- the operating point: every class non-inferior, levels in fixed sequence ---------------------


def _rel(blocks: dict[float, np.ndarray], classes=None, method="l1") -> pd.DataFrame:
    """A relative-change table from {level: seeds x classes}, with a dense AP of 0.5."""
    rows = []
    for k, r in blocks.items():
        names = classes or [f"c{j}" for j in range(r.shape[1])]
        rows += [{"seed": s, "method": method, "level": k, "class_name": names[j], "ap0": 0.5,
                  "ap": 0.5 * (1 + r[s, j]), "rel_dap": r[s, j]} for s in range(r.shape[0]) for j in range(r.shape[1])]
    return pd.DataFrame(rows)


def test_class_noninferiority_matches_scipy_each_class_at_full_alpha():
    rng = np.random.default_rng(3)
    tol, alpha = 0.05, 0.05
    shift = np.array([0.0, -0.01, -0.03, -0.045, 0.02])
    r = shift + rng.normal(0, 0.02, (8, len(shift)))
    ni = op.class_noninferiority(_rel({0.5: r}), tol, alpha)
    got = ni.table.set_index("class_name")
    p = [stats.ttest_1samp(r[:, j] + tol, 0.0, alternative="greater").pvalue for j in range(len(shift))]
    np.testing.assert_allclose(got["ni_p"].to_numpy(), p, rtol=1e-9)
    # Intersection-union: each class against alpha itself, no correction; the level needs all of them.
    assert got["noninferior"].tolist() == [x <= alpha for x in p]
    assert not all(x <= alpha for x in p) and sum(x <= alpha for x in p) >= 3  # the data exercise both
    point = ni.points["l1"]
    assert point["operating_point"] == 0.0 and point["first_level_not_shown"] == 0.5
    assert point["classes_not_shown"] == [{"level": 0.5, "tested": True,
                                           "classes": [f"c{j}" for j in range(5) if p[j] > alpha]}]
    mde = {m["class"]: m["mde"] for m in point["class_mde_at_first_not_shown"]}
    assert mde == pytest.approx(dict(zip(got.index, got["ni_mde"])))
    ok = op.class_noninferiority(_rel({0.5: r[:, :2]}), tol, alpha).points["l1"]
    assert ok["operating_point"] == 0.5 and ok["first_level_not_shown"] is None and ok["class_mde_at_first_not_shown"] \
        is None


def test_noise_passes_the_significance_rule_but_is_not_shown_safe():
    # A rare class whose change is -63% in the median seed, with seeds from -90% to +50%: the
    # paper-style test finds no significant loss; non-inferiority does not show it kept.
    steady = np.array([[0.004, -0.003], [-0.002, 0.001], [0.0, 0.002], [0.003, -0.004], [-0.001, 0.0]])
    hernia = np.array([-0.9, 0.5, -0.63, 0.4, -0.7])
    rel = _rel({0.5: np.column_stack([steady, hernia])}, ["A", "B", "Hernia"])
    loss = op.class_loss_tests(rel, 0.05, "ttest", "holm", 0.05).set_index("class_name")
    assert np.median(hernia) == -0.63 and not loss.loc["Hernia", "loses"] and loss.loc["Hernia", "p_raw"] > 0.05
    point = op.class_noninferiority(rel, 0.05, 0.05).points["l1"]
    assert point["operating_point"] == 0.0 and point["classes_not_shown"][0]["classes"] == ["Hernia"]
    mde = {m["class"]: m["mde"] for m in point["class_mde_at_first_not_shown"]}
    assert mde["Hernia"] > 0.05 > mde["A"]  # these seeds could not have shown Hernia kept


def test_levels_are_tested_in_fixed_sequence_stopping_at_the_first_failure():
    steady = np.array([[0.004, -0.003], [-0.002, 0.001], [0.0, 0.002], [0.003, -0.004], [-0.001, 0.0]])
    one_loses = steady + np.array([-0.2, 0.0])
    rel = _rel({0.25: steady, 0.5: one_loses, 0.75: steady}, ["A", "B"], method="channel")
    ni = op.class_noninferiority(rel, 0.05, 0.05)
    point = ni.points["channel"]
    assert point["operating_point"] == 0.25 and point["first_level_not_shown"] == 0.5
    assert point["classes_not_shown"] == [{"level": 0.25, "tested": True, "classes": []},
                                          {"level": 0.5, "tested": True, "classes": ["A"]},
                                          {"level": 0.75, "tested": False, "classes": []}]
    at75 = ni.table[ni.table["level"] == 0.75]
    assert (at75["ni_p"] < 0.05).all() and not at75["noninferior"].any() and not at75["ni_tested"].any()
    # l1: its level 0 is the dense model, untested; failing at the first pruned level leaves 0.
    first = op.class_noninferiority(_rel({0.25: one_loses, 0.5: steady}, ["A", "B"]), 0.05, 0.05).points["l1"]
    assert first["operating_point"] == 0.0 and first["first_level_not_shown"] == 0.25
    assert [r["level"] for r in first["classes_not_shown"]] == [0.25, 0.5]  # no row for the reference


def test_per_class_noninferiority_needs_three_seeds():
    rel = _rel({0.5: np.array([[-0.01, 0.0], [-0.02, 0.01]])}, ["A", "B"])
    ni = op.class_noninferiority(rel, 0.05, 0.05)
    point = ni.points["l1"]
    assert point["operating_point"] is None and point["first_level_not_shown"] is None
    assert point["classes_not_shown"] is None and point["class_mde_at_operating_point"] is None
    assert ni.table["ni_p"].isna().all() and not ni.table["noninferior"].any()
    assert "not measured" in ni.note and "at least 3" in ni.note


def test_a_class_with_undefined_change_is_left_out_and_listed():
    steady = np.array([[0.004, -0.003], [-0.002, 0.001], [0.0, 0.002], [0.003, -0.004], [-0.001, 0.0]])
    rel = _rel({0.25: steady, 0.5: steady}, ["A", "B"])
    bad = rel[rel["class_name"] == "A"].assign(class_name="Z", ap0=np.where(rel.loc[rel["class_name"] == "A", "seed"]
                                                                             == 2, 0.0, 0.5))
    ni = op.class_noninferiority(pd.concat([rel, bad], ignore_index=True), 0.05, 0.05)
    assert ni.left_out == [{"class": "Z", "reason": "dense AP is not above 0 at seed(s) [2], so its relative "
                                                    "change is undefined"}]
    assert ni.points["l1"]["operating_point"] == 0.5  # decided by A and B
    z = ni.table[ni.table["class_name"] == "Z"]
    assert len(z) == 2 and z["ni_reason"].str.startswith("left out: dense AP").all() and not z["noninferior"].any()
    rule = op.rule(0.05, {"test": "ttest", "correction": "holm", "alpha": 0.05, "n_seeds": 5}, 3, ni)
    assert rule["noninferiority"]["classes_left_out"] == ni.left_out
    points = {"l1": {k: None for k in op.POINT_KEYS} | {"operating_point": 0.5, "first_level_not_shown": None,
                                                          "classes_not_shown": []}}
    assert "Z left out: dense AP is not above 0" in op.markdown_table(points, rule)


# --- operating points: every branch ----------------------------------------------------------


def _entry(levels, significant, n_seeds=5):
    return {"levels": levels, "n_seeds": n_seeds,
            "paired_tests": [{"sparsity": k, "significant": s} for k, s in zip(levels, significant)
                             if s is not None]}


def _tests(method, losing: dict[float, list[str]], levels):
    return pd.DataFrame([{"method": method, "level": k, "class_name": c, "loses": c in losing.get(k, [])}
                         for k in levels for c in CLASSES])


EMPTY_PARETO = pd.DataFrame({c: [] for c in cost_accuracy.PARETO_COLUMNS})


@pytest.mark.parametrize("name, entry, losing, expected", [
    # mAP fails at 0.75, no class loses earlier: both rules agree, no gap.
    ("agree", _entry(LEVELS, [None, False, False, True]), {0.75: ["A"]}, (0.5, 0.5, 0.0, 0)),
    # A class loses at 0.5 while mAP holds there: safe on average to 0.5, for every class to 0.25.
    ("class first", _entry(LEVELS, [None, False, False, True]), {0.5: ["A"], 0.75: ["A", "B"]}, (0.5, 0.25, 0.25, 1)),
    # A class loses at 0.25 but not at 0.5: the scan stops at the first failure.
    ("first failure stops", _entry(LEVELS, [None, False, False, False]), {0.25: ["C"]}, (0.75, 0.0, 0.75, 0)),
    # mAP fails at the first pruned level: the dense level 0 is the answer.
    ("first level", _entry(LEVELS, [None, True, True, True]), {}, (0.0, 0.0, 0.0, 0)),
    # single level, safe on both counts.
    ("int8 safe", _entry([0.0], [False]), {}, (0.0, 0.0, 0.0, 0)),
    # single level, safe on average, a class loses: no operating point.
    ("int8 class", _entry([0.0], [False]), {0.0: ["B", "C"]}, (0.0, None, None, 2)),
    # single level, mAP significantly lower: nothing is safe.
    ("int8 map", _entry([0.0], [True]), {}, (None, None, None, None)),
    # one seed: no test, no operating point.
    ("one seed", _entry(LEVELS, [None, False, False, False], n_seeds=1), {}, (None, None, None, None)),
])
def test_operating_point_rule(name, entry, losing, expected):
    method = "l1" if len(entry["levels"]) > 1 else "int8"
    tested = [k for k in entry["levels"] if not (method == "l1" and k == 0.0)]
    points = op.operating_points({method: entry}, _tests(method, losing, tested), EMPTY_PARETO)[method]
    got = (points["max_safe_level_map"], points["max_safe_level_all_classes"], points["gap"],
           points["n_classes_losing_at_map_point"])
    assert got == expected, name
    assert list(points) == op.POINT_KEYS
    # Costs are reported at the operating point, else at the lowest level that was tested and failed.
    lowest = min(entry["levels"]) if entry["n_seeds"] >= 2 else None
    assert points["measured_at"] == (expected[1] if expected[1] is not None else lowest), name


def test_operating_points_need_per_class_rows_for_every_level():
    with pytest.raises(DataError, match=r"no rows for l1@0.75"):
        op.operating_points({"l1": _entry(LEVELS, [None, False, False, False])},
                            _tests("l1", {}, [0.25, 0.5]), EMPTY_PARETO)


# --- efficiency aggregation and the Pareto outputs ---------------------------------------------


def _write_efficiency(tmp_path, table):
    files = {}
    for seed, rows in table.groupby("seed"):
        files[seed] = tmp_path / f"efficiency-seed-{seed}.csv"
        rows.to_csv(files[seed], index=False)
    return files


def test_read_efficiency_checks_each_file(tmp_path):
    table = _efficiency()
    files = _write_efficiency(tmp_path, table)
    got = cost_accuracy.read_efficiency(files)
    pd.testing.assert_frame_equal(got, table.reset_index(drop=True), check_dtype=False)
    assert cost_accuracy.read_efficiency({0: tmp_path / "none-0.csv", 1: tmp_path / "none-1.csv"}).empty
    bad = table[table["seed"] == 1].copy()
    for mutate, message in [
        (lambda d: d.assign(bytes=0), "'bytes' must hold positive"),
        (lambda d: d.assign(seed=7), "expected only 1"),
        (lambda d: d.drop(columns="engine"), "columns"),
        (lambda d: d[d["method"] != "dense"], "dense model"),
        (lambda d: pd.concat([d, d.iloc[:1]]), "two rows"),
        (lambda d: d.assign(latency_ms_b1=-1.0), "positive where measured"),
    ]:
        mutate(bad).to_csv(files[1], index=False)
        with pytest.raises(DataError, match=message):
            cost_accuracy.read_efficiency(files)
    files[1].unlink()
    with pytest.raises(DataError, match=r"efficiency-seed-1.csv: not found.*prune@1"):
        cost_accuracy.read_efficiency(files)


def test_efficiency_blocks_follow_method_levels():
    table = _efficiency()
    cost_accuracy.check_blocks(table, {m: method_levels(m, LEVELS) for m in METHODS})
    extra = pd.concat([table, table[table["method"] == "int8"].assign(level=0.5)])
    with pytest.raises(DataError, match=r"unexpected \[\('int8', 0.5\)\]"):
        cost_accuracy.check_blocks(extra, {m: method_levels(m, LEVELS) for m in METHODS})


def test_efficiency_joined_with_accuracy_and_pareto_points():
    per_class = _per_class()
    joined = cost_accuracy.join_accuracy(_efficiency(), per_class)
    assert list(joined.columns) == cost_accuracy.JOINED_COLUMNS and len(joined) == len(_efficiency())
    rel = op.relative_to_dense(per_class)
    for row in joined.sample(12, random_state=0).itertuples():
        ref = ("l1", 0.0) if row.method == "dense" else (row.method, row.level)
        block = per_class[(per_class["seed"] == row.seed) & (per_class["method"] == ref[0])
                          & np.isclose(per_class["level"], ref[1])]
        assert row.map == pytest.approx(block["ap"].mean())
        if ref != ("l1", 0.0):
            r = rel[(rel["seed"] == row.seed) & (rel["method"] == ref[0]) & np.isclose(rel["level"], ref[1])]
            assert row.worst_class_rel_dap == pytest.approx(r["rel_dap"].min())
        else:
            assert row.worst_class_rel_dap == 0.0
    pareto = cost_accuracy.pareto_table(per_class, joined)
    assert len(pareto) == sum(len(v) for v in METHODS.values()) + 1
    int8 = pareto[pareto["method"] == "int8"].iloc[0]
    assert int8["level"] == 0.0 and int8["latency_ms_b1"] == 2.0 and int8["engine"] == "onnxruntime-cpu"
    assert int8["bytes"] == np.median([1e6 + s for s in SEEDS]) and int8["megabytes"] == pytest.approx(1.000002)
    fp16 = pareto[pareto["method"] == "fp16"].iloc[0]
    curve_c = rel[(rel["method"] == "fp16") & (rel["class_name"] == "C")]["rel_dap"].median()
    assert fp16["worst_class_rel_dap"] == pytest.approx(curve_c)  # the worst class's median over seeds


def test_tradeoffs_of_hand_made_methods(tmp_path, monkeypatch):
    per_class = _per_class()
    cfg = config.AnalyzeConfig(class_tolerance=0.1)
    t = summary.tradeoffs(cfg, CLASSES, per_class, _evaluation(per_class), _efficiency())
    points = t.summary["operating_points"]
    assert list(points) == list(METHODS)
    got = {m: (p["max_safe_level_map"], p["max_safe_level_all_classes"], p["gap"], p["classes_losing_at_map_point"])
           for m, p in points.items()}
    assert got == {"l1": (0.5, 0.25, 0.25, ["A"]), "random": (0.0, 0.0, 0.0, []), "int8": (0.0, 0.0, 0.0, []),
                   "fp16": (0.0, None, None, ["C"])}
    assert points["l1"]["latency_ms_b1"] == 4.5 and points["int8"]["latency_ms_b1"] == 2.0
    # No operating point: the costs and scores are those of its only level, which was found unsafe.
    fp16_row = t.pareto[(t.pareto["method"] == "fp16") & (t.pareto["level"] == 0.0)].iloc[0]
    assert points["fp16"]["measured_at"] == 0.0 and points["fp16"]["bytes"] == fp16_row["bytes"]
    assert points["fp16"]["worst_class_rel_dap"] == pytest.approx(fp16_row["worst_class_rel_dap"])
    # The operating point: every class shown to lose less than 10% (non-inferiority, fixed sequence).
    # l1: A loses 30% at 0.5; random: A loses 50% at 0.25 (its level 0 is the dense model); int8: noise
    # only; fp16: C loses 30% at its one level, so it has none.
    ni = {m: (p["operating_point"], p["first_level_not_shown"],
              None if p["first_level_not_shown"] is None else
              next(r["classes"] for r in p["classes_not_shown"] if r["level"] == p["first_level_not_shown"]))
          for m, p in points.items()}
    assert ni == {"l1": (0.25, 0.5, ["A"]), "random": (0.0, 0.25, ["A"]), "int8": (0.0, None, None),
                  "fp16": (None, 0.0, ["C"])}
    assert points["l1"]["classes_not_shown"][-1] == {"level": 0.75, "tested": False, "classes": CLASSES}
    assert [r["class"] for r in points["l1"]["class_mde_at_first_not_shown"]] == CLASSES
    assert points["l1"]["max_noninferior_level_map"] == 0.5  # evaluate's, at evaluate.margin
    rule = t.summary["operating_point_rule"]
    ni_rule = rule.pop("noninferiority")
    assert rule == {"class_tolerance": 0.1, "test": "ttest", "correction": "holm",
                    "alpha": 0.05, "n_seeds": 5, "reference": "l1@0", "note": None}
    assert (ni_rule["margin"], ni_rule["alpha"], ni_rule["min_seeds"], ni_rule["classes_left_out"], ni_rule["note"]) \
        == (0.1, 0.05, 3, [], None)
    t.summary["operating_point_rule"]["noninferiority"] = ni_rule

    monkeypatch.chdir(tmp_path)
    out = Layout("tiny")
    summary.write_tradeoffs(t, out)
    assert (out.figures / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pareto = pd.read_csv(out.pareto)
    assert list(pareto.columns) == cost_accuracy.PARETO_COLUMNS and set(pareto["method"]) == {*METHODS, "dense"}
    assert list(pd.read_csv(out.efficiency).columns) == cost_accuracy.JOINED_COLUMNS
    csv = pd.read_csv(out.class_loss_tests)
    assert list(csv.columns) == op.CLASS_TABLE_COLUMNS and len(csv) == len(t.class_tests)
    a = csv[(csv["method"] == "l1") & (csv["class_name"] == "A")].set_index("level")
    assert a["noninferior"].tolist() == [True, False, False] and a["ni_tested"].tolist() == [True, True, False]
    assert a["loses"].tolist() == [False, True, True]  # the paper-style column beside it

    table = op.markdown_table(points, t.summary["operating_point_rule"])
    assert "| l1 | 0.25 | 0.5: A | 0.5 | 0.25 | 0.25 | A |" in table
    assert "| fp16 | n/a | 0: C | 0 | n/a | n/a | C | 0 (not safe) |" in table
    # A summary.json from before non-inferiority renders as it did (the README block stays checkable).
    old_rule = {k: v for k, v in t.summary["operating_point_rule"].items() if k != "noninferiority"}
    old_points = {m: {k: v for k, v in p.items() if k not in op.NI_POINT_KEYS} for m, p in points.items()}
    old = op.markdown_table(old_points, old_rule)
    assert "| l1 | 0.5 | 0.25 | 0.25 | A |" in old and "non-inferiority" not in old

    # Without efficiency measurements the figure says so and the costs are null.
    empty = cost_accuracy.read_efficiency({})
    t = summary.tradeoffs(cfg, CLASSES, per_class, _evaluation(per_class), empty)
    assert t.summary["operating_points"]["l1"]["bytes"] is None
    summary.write_tradeoffs(t, out)
    assert len(pd.read_csv(out.efficiency)) == 0


def test_tradeoffs_need_the_per_method_tests():
    per_class = _per_class()
    old = {k: v for k, v in _evaluation(per_class).items() if k != "methods"}
    with pytest.raises(DataError, match="rerun `dvc repro evaluate`"):
        summary.tradeoffs(config.AnalyzeConfig(), CLASSES, per_class, old, _efficiency())


def test_readme_table_is_rendered_from_the_outputs(tmp_path, monkeypatch):
    from cxrprune.analysis import readme
    from cxrprune.core.atomic import write_json

    monkeypatch.chdir(tmp_path)
    out = Layout("tiny")
    per_class = _per_class()
    t = summary.tradeoffs(config.AnalyzeConfig(class_tolerance=0.1), CLASSES, per_class, _evaluation(per_class),
                          _efficiency())
    summary.write_tradeoffs(t, out)
    write_json(out.summary, {"map_dense": 0.5, **t.summary})
    text = readme.render(out)
    assert "| l1 | 0.25 | 0.5: A | 0.5 | 0.25 | 0.25 | A |" in text
    dense = _efficiency().query("method == 'dense'")
    assert f"{np.median(dense['bytes']):,.0f} bytes" in text and "5.00 ms at batch 1" in text

    write_json(out.summary, {"map_dense": 0.5})
    with pytest.raises(DataError, match="dvc repro analyze"):
        readme.render(out)
