"""cxrprune.analysis.evaluate and the evaluate stage: metric tables, paired test, outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrprune.analysis import evaluate as ev
from cxrprune.compression.predictions import check_predictions
from cxrprune.core.config import EvaluateConfig, from_dict
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.stages import evaluate as stage

CLASSES = ["A", "B", "C"]


def make_labels(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < [0.5, 0.2, 0.1]).astype(np.int8)
    y[:3] = 1  # every class has positives ...
    y[3:6] = 0  # ... and negatives
    df = pd.DataFrame(y, columns=CLASSES)
    df.insert(0, "patient_id", [f"{i // 2:08d}" for i in range(n)])
    df.insert(0, "image_id", [f"{i:08d}_000.png" for i in range(n)])
    return df


def make_predictions(labels, levels=(0.0, 0.5, 0.9), methods=("l1", "random"), seed=0):
    rng = np.random.default_rng(100 + seed)
    y = labels[CLASSES].to_numpy()
    blocks = []
    for m in methods:
        for k in levels:
            p = np.clip(0.3 * y + rng.random(y.shape) * (0.5 + k), 0, 1).astype(np.float32)
            block = pd.DataFrame(p, columns=CLASSES)
            block.insert(0, "sparsity", float(k))
            block.insert(0, "method", m)
            block.insert(0, "image_id", labels["image_id"].to_numpy())
            blocks.append(block)
    return pd.concat(blocks, ignore_index=True)


def map_rows(values: dict[float, list[float]], method="l1") -> pd.DataFrame:
    """A mAP table from {sparsity: [mAP of seed 0, seed 1, ...]}."""
    rows = [(s, method, k, v, 0.5) for k, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=ev.MAP_COLUMNS)


# --- per-class metrics ------------------------------------------------------------------


def test_per_class_metrics_match_sklearn():
    labels = make_labels()
    preds = make_predictions(labels)
    out = ev.per_class_metrics(preds, labels, CLASSES, seed=7, f1_threshold=0.4, workers=2)
    assert list(out.columns) == ev.PER_CLASS_COLUMNS
    assert len(out) == 2 * 3 * len(CLASSES)
    assert (out["seed"] == 7).all()
    assert list(out["class_name"][:3]) == CLASSES
    for row in out.itertuples():
        block = preds[(preds["method"] == row.method) & (preds["sparsity"] == row.level)]
        y, s = labels[row.class_name], block[row.class_name]
        assert row.ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert row.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row.f1 == pytest.approx(f1_score(y, s >= 0.4, zero_division=0), abs=1e-12)


def test_block_order_in_file_does_not_matter():
    labels = make_labels()
    preds = make_predictions(labels)
    shuffled = pd.concat([g for _, g in preds.groupby(["method", "sparsity"])][::-1], ignore_index=True)
    a = ev.per_class_metrics(preds, labels, CLASSES, 0)
    b = ev.per_class_metrics(shuffled, labels, CLASSES, 0)
    pd.testing.assert_frame_equal(a, b)


def test_image_order_mismatch_names_block_and_ids():
    labels = make_labels()
    preds = make_predictions(labels)
    rows = preds.index[(preds["method"] == "random") & (preds["sparsity"] == 0.5)]
    ids = preds.loc[rows, "image_id"].to_numpy().copy()
    ids[[4, 5]] = ids[[5, 4]]
    preds.loc[rows, "image_id"] = ids
    with pytest.raises(DataError, match=r"seed-3\.parquet \(seed 3\), method random, sparsity 0\.5: .*"
                                        r"row 4 \(got '00000005_000\.png', expected '00000004_000\.png'\)"):
        ev.per_class_metrics(preds, labels, CLASSES, 3, source="seed-3.parquet")


def test_block_with_missing_rows():
    labels = make_labels()
    preds = make_predictions(labels).drop(index=[0])
    with pytest.raises(DataError, match="l1, sparsity 0: 59 rows but the test set has 60"):
        ev.per_class_metrics(preds, labels, CLASSES, 0)


@pytest.mark.parametrize("bad, message", [(1.5, "1.5 for class 'B'"), (np.nan, "nan for class 'B'"),
                                          (-0.1, "not a finite number in \\[0, 1\\]")])
def test_probabilities_must_be_in_unit_interval(bad, message):
    labels = make_labels()
    preds = make_predictions(labels)
    preds.loc[10, "B"] = bad
    with pytest.raises(DataError, match=message):
        ev.per_class_metrics(preds, labels, CLASSES, 0)


def test_missing_columns_and_undefined_classes():
    labels = make_labels()
    preds = make_predictions(labels)
    with pytest.raises(DataError, match="missing column.*'C'"):
        ev.per_class_metrics(preds.drop(columns="C"), labels, CLASSES, 0)
    no_pos = labels.assign(C=0)
    with pytest.raises(DataError, match="class 'C' has no positive"):
        ev.per_class_metrics(preds, no_pos, CLASSES, 0)
    with pytest.raises(DataError, match="only 0 and 1"):
        ev.per_class_metrics(preds, labels.assign(A=2), CLASSES, 0)


def test_the_contract_check_reports_missing_levels():
    labels = make_labels()
    preds = make_predictions(labels, levels=(0.0, 0.5)).astype({c: np.float32 for c in CLASSES})
    ids = labels["image_id"].tolist()
    methods = sorted(preds["method"].unique())
    check_predictions(preds, "x.parquet", ids, CLASSES, methods, [0.0, 0.5])
    with pytest.raises(DataError, match="x.parquet: .*rows, expected .* x 3 level"):
        check_predictions(preds, "x.parquet", ids, CLASSES, methods, [0.0, 0.5, 0.9])
    l1 = preds[preds["method"] == "l1"].reset_index(drop=True)
    no_half = l1.assign(sparsity=0.0)  # right row count, but the 0.5 block is missing
    with pytest.raises(DataError, match="block l1@0 has .* not the .* test images in order"):
        check_predictions(no_half, "x.parquet", ids, CLASSES, ["l1"], [0.0, 0.5])


def test_map_table_is_plain_mean():
    labels = make_labels()
    per_class = ev.per_class_metrics(make_predictions(labels), labels, CLASSES, 0)
    maps = ev.map_table(per_class)
    assert list(maps.columns) == ev.MAP_COLUMNS and len(maps) == 6
    block = per_class[(per_class["method"] == "l1") & (per_class["level"] == 0.5)]
    row = maps[(maps["method"] == "l1") & (maps["level"] == 0.5)].iloc[0]
    assert row["map"] == pytest.approx(block["ap"].mean())
    assert row["mean_auroc"] == pytest.approx(block["auroc"].mean())
    with pytest.raises(DataError, match="undefined AP/AUROC for class 'A'"):
        ev.map_table(per_class.assign(ap=np.where(per_class["class_name"] == "A", np.nan, per_class["ap"])))


# --- paired test ------------------------------------------------------------------------


def test_paired_test_matches_scipy():
    rng = np.random.default_rng(5)
    dense = rng.uniform(0.3, 0.4, 8)
    values = {0.0: list(dense), 0.1: list(dense - rng.normal(0.01, 0.01, 8)),
              0.2: list(dense - rng.normal(0.0, 0.02, 8))}
    maps = map_rows(values)
    for test, fn in (("wilcoxon", stats.wilcoxon), ("ttest", stats.ttest_rel)):
        res = ev.paired_test(maps, test=test, correction="none", alpha=0.05)
        for row in res.table.itertuples():
            want = fn(np.array(values[row.sparsity]), dense, alternative="less")
            assert row.p_raw == pytest.approx(want.pvalue, rel=1e-12)
            assert row.statistic == pytest.approx(want.statistic, rel=1e-12)
            assert row.p_adj == row.p_raw
    assert list(res.table.columns) == ev.PAIRED_COLUMNS
    row = res.table.iloc[0]
    assert row["median_map"] == pytest.approx(np.median(values[0.1]))
    assert row["drop"] == pytest.approx(np.median(dense - np.array(values[0.1])))


def test_holm_hand_computed():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(ev.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(ev.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError):
        ev.holm([0.1, np.nan])


@pytest.mark.parametrize("significant, expected", [
    ([False, False, False, False, False, True, False, False], 0.25),  # drop at 0.3 only
    ([False] * 8, 0.4),
    ([True] + [False] * 7, 0.0),
    ([False, True, True, True, True, True, True, True], 0.05),
])
def test_max_safe_sparsity(significant, expected):
    levels = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
    assert ev.max_safe_sparsity(levels, significant) == expected
    assert ev.max_safe_sparsity(levels[::-1], significant[::-1]) == expected  # order-free


def test_drop_at_one_level_stops_the_scan():
    seeds = 8
    base = np.linspace(0.30, 0.37, seeds)
    values = {0.0: list(base), 0.25: list(base + 0.001 * np.resize([1, -1], seeds)),
              0.3: list(base - 0.05 - 0.001 * np.arange(seeds)),
              0.35: list(base + 0.002 * np.resize([1, -1], seeds))}
    res = ev.paired_test(map_rows(values), test="ttest", correction="holm", alpha=0.05)
    assert list(res.table["significant"]) == [False, True, False]
    assert res.max_safe_sparsity == 0.25
    assert res.min_attainable_p is None and res.note is None


def test_identical_values_give_p_one():
    values = {0.0: [0.3, 0.4, 0.5], 0.05: [0.3, 0.4, 0.5], 0.1: [0.2, 0.3, 0.4]}
    for test in ("wilcoxon", "ttest"):
        res = ev.paired_test(map_rows(values), test=test, correction="none")
        assert res.table["p_raw"].iloc[0] == 1.0
        assert res.table["statistic"].iloc[0] == 0.0


def test_single_seed_reports_null_and_why():
    res = ev.paired_test(map_rows({0.0: [0.4], 0.5: [0.3]}))
    assert res.max_safe_sparsity is None and res.n_seeds == 1
    assert res.table["p_raw"].isna().all() and not res.table["significant"].any()
    assert "at least 2" in res.note
    assert res.table["median_map"].iloc[0] == 0.3


def test_too_few_seeds_for_holm_is_explained():
    levels = [round(0.05 * i, 2) for i in range(20)]
    values = {k: list(0.4 - k * np.array([0.1, 0.11, 0.12, 0.13, 0.14])) for k in levels}
    res = ev.paired_test(map_rows(values), test="wilcoxon", correction="holm", alpha=0.05)
    assert res.min_attainable_p == 1 / 32
    assert res.table["p_raw"].min() == pytest.approx(1 / 32)  # raw p would reject at every level
    assert not res.table["significant"].any()
    assert res.max_safe_sparsity == 0.95
    assert "1/2^5" in res.note and "use at least 9 seeds" in res.note
    res9 = ev.paired_test(map_rows({k: list(0.4 - k * np.linspace(0.1, 0.2, 9)) for k in levels}))
    assert res9.note is None and res9.max_safe_sparsity == 0.0


def test_paired_test_input_errors():
    with pytest.raises(DataError, match="no dense level"):
        ev.paired_test(map_rows({0.1: [0.3, 0.4]}))
    with pytest.raises(DataError, match="no rows for method 'l1'"):
        ev.paired_test(map_rows({0.0: [0.3, 0.4]}, method="random"))
    incomplete = map_rows({0.0: [0.3, 0.4], 0.1: [0.3, 0.4]}).iloc[:-1]
    with pytest.raises(DataError, match="seed 1 has no mAP for l1@0.1"):
        ev.paired_test(incomplete)
    with pytest.raises(ValueError, match="test must be"):
        ev.paired_test(map_rows({0.0: [0.3, 0.4]}), test="sign")


def test_summarize_is_json_safe():
    values = {0.0: [0.40, 0.42, 0.41], 0.5: [0.39, 0.41, 0.40], 0.9: [0.30, 0.31, 0.29]}
    maps = pd.concat([map_rows(values), map_rows({k: [v - 0.1 for v in vs] for k, vs in values.items()},
                                                 method="random")])
    cfg = EvaluateConfig(test="wilcoxon", correction="holm", alpha=0.05)
    summary = ev.summarize(maps, ev.paired_test(maps), cfg)
    json.dumps(summary, allow_nan=False)
    assert summary["map_dense"] == pytest.approx(0.41)
    assert summary["map_at_50"] == pytest.approx(0.40) and summary["map_at_90"] == pytest.approx(0.30)
    assert summary["map_at_95"] is None  # level not evaluated
    assert summary["random_map_at_90"] == pytest.approx(0.20) and summary["random_map_at_95"] is None
    assert summary["n_seeds"] == 3 and summary["min_attainable_p"] == 0.125
    assert (summary["test"], summary["correction"], summary["alpha"]) == ("wilcoxon", "holm", 0.05)
    assert summary["max_safe_sparsity"] == 0.9 and summary["paired_tests"][0]["sparsity"] == 0.5
    single = ev.summarize(map_rows({0.0: [0.4], 0.5: [0.3]}), ev.paired_test(map_rows({0.0: [0.4], 0.5: [0.3]})), cfg)
    json.dumps(single, allow_nan=False)
    assert single["max_safe_sparsity"] is None and single["paired_tests"][0]["p_raw"] is None
    assert "random_map_at_50" not in single


def test_map_curve_quantiles():
    curve = ev.map_curve(map_rows({0.0: [0.1, 0.2, 0.3, 0.4, 0.5]}))
    assert list(curve.columns) == ev.CURVE_COLUMNS
    assert curve.iloc[0][["map", "map_q25", "map_q75"]].tolist() == pytest.approx([0.3, 0.2, 0.4])


# --- non-inferiority: safe sparsity shown, not assumed ------------------------------------


def planted(changes: dict[float, list[float]], dense=(0.40, 0.42, 0.41, 0.43, 0.39), method="l1") -> pd.DataFrame:
    """A mAP table whose relative change against the dense model is exactly ``changes``."""
    d = np.array(dense)
    values = {0.0: list(d), **{k: list(d * (1 + np.array(r))) for k, r in changes.items()}}
    return map_rows(values, method)


def ni_oracle(d, margin):
    """scipy's one-sided one-sample t test of H0 mean(d) <= -margin."""
    return stats.ttest_1samp(np.asarray(d) + margin, 0.0, alternative="greater").pvalue


def test_noninferiority_matches_scipy_on_the_relative_change():
    rng = np.random.default_rng(11)
    dense = rng.uniform(0.35, 0.45, 6)
    values = {0.0: list(dense), 0.1: list(dense * (1 - rng.normal(0.01, 0.01, 6))),
              0.2: list(dense * (1 - rng.normal(0.03, 0.02, 6)))}
    res = ev.noninferiority_test(map_rows(values), "l1", margin=0.05, alpha=0.05)
    assert list(res.table.columns) == ev.NI_COLUMNS and res.table["sparsity"].tolist() == [0.1, 0.2]
    for row in res.table.itertuples():
        d = np.array(values[row.sparsity]) / dense - 1  # per seed, against that seed's dense mAP
        assert row.p == pytest.approx(ni_oracle(d, 0.05), rel=1e-9)
        assert row.mean_rel_change == pytest.approx(d.mean())
        ci = stats.ttest_1samp(d, 0.0, alternative="greater").confidence_interval(0.95)
        assert row.lower_bound == pytest.approx(ci.low, abs=1e-12)
        assert row.n == 6 and row.mde > 0 and pd.isna(row.reason)


def test_small_steady_drop_is_shown_safe_large_noisy_drop_is_not():
    # 0.1: -0.2% +- 0.4% -> shown to lose less than 5%. 0.2: -8% with seeds from -25% to +10% ->
    # not shown, although the paper's paired test finds no significant drop and calls it safe.
    small = [-0.004, 0.003, -0.006, 0.002, -0.005]
    noisy = [-0.25, 0.10, -0.20, 0.05, -0.10]
    maps = planted({0.1: small, 0.2: noisy})
    ni = ev.noninferiority_test(maps, margin=0.05, alpha=0.05).table.set_index("sparsity")
    assert ni.loc[0.1, "noninferior"] and ni.loc[0.1, "p"] == pytest.approx(ni_oracle(small, 0.05), rel=1e-9)
    assert not ni.loc[0.2, "noninferior"] and ni.loc[0.2, "p"] == pytest.approx(ni_oracle(noisy, 0.05), rel=1e-9)
    assert ni.loc[0.2, "p"] > 0.5 and ni.loc[0.2, "mde"] > 0.05  # these seeds could not have shown it
    paired = ev.paired_test(maps, test="ttest", correction="holm", alpha=0.05)
    assert not paired.table["significant"].any() and paired.max_safe_sparsity == 0.2  # noise counted as safety
    doc = ev.summarize(maps, paired, EvaluateConfig(test="ttest", margin=0.05))
    assert doc["max_noninferior_sparsity"] == 0.1 and doc["max_safe_sparsity"] == 0.2
    assert "MDE" in doc["noninferiority_note"] and "0.2" in doc["noninferiority_note"]


def test_fixed_sequence_stops_at_the_first_level_not_shown():
    steady = [-0.01, -0.012, -0.008, -0.011, -0.009]
    maps = planted({0.1: steady, 0.2: [-0.06, -0.07, -0.05, -0.065, -0.055], 0.3: steady})
    res = ev.noninferiority_test(maps, margin=0.05, alpha=0.05)
    t = res.table.set_index("sparsity")
    assert t["noninferior"].tolist() == [True, False, False] and t["tested"].tolist() == [True, True, False]
    assert t.loc[0.3, "p"] < 0.05  # would pass on its own: past the first failure no claim is made
    assert res.max_level == 0.1 and res.note is None
    first = ev.noninferiority_test(planted({0.1: [-0.2, -0.1, -0.3, -0.2, -0.1], 0.2: steady}), margin=0.05)
    assert first.max_level == 0.0  # l1: only the dense model itself
    int8 = pd.concat([planted({}), planted({}, method="int8").assign(map=lambda m: m["map"] * 0.8)])
    assert ev.noninferiority_test(int8, "int8", margin=0.05).max_level is None  # its only level is not shown


def test_a_level_equal_to_the_dense_model_passes_untested():
    steady = [-0.01, -0.012, -0.008, -0.011, -0.009]
    maps = pd.concat([planted({0.1: steady}), planted({0.1: steady}, method="random")])  # random@0 = dense
    res = ev.noninferiority_test(maps, "random", margin=0.05)
    t = res.table.set_index("sparsity")
    assert t.loc[0.0, "noninferior"] and np.isnan(t.loc[0.0, "p"]) and t.loc[0.0, "reason"] == ev.IDENTICAL
    assert t.loc[0.1, "noninferior"] and res.max_level == 0.1
    assert 0.0 not in ev.noninferiority_test(maps, "l1", margin=0.05).table["sparsity"].tolist()  # the reference


@pytest.mark.parametrize("n_seeds", [1, 2])
def test_fewer_than_three_seeds_is_not_measured(n_seeds):
    maps = planted({0.5: [-0.01, -0.02][:n_seeds]}, dense=(0.4, 0.42)[:n_seeds])
    res = ev.noninferiority_test(maps, margin=0.05)
    assert res.max_level is None and res.n_seeds == n_seeds
    assert res.table["p"].isna().all() and res.table["lower_bound"].isna().all()  # no degenerate p
    assert not res.table["noninferior"].any() and not res.table["tested"].any()
    assert "not measured" in res.note and "at least 3" in res.note
    doc = ev.summarize(maps, ev.paired_test(maps), EvaluateConfig())
    json.dumps(doc, allow_nan=False)
    assert doc["max_noninferior_sparsity"] is None and "at least 3" in doc["noninferiority_note"]
    assert doc["noninferiority"][0]["p"] is None and "at least 3" in doc["noninferiority"][0]["reason"]


def test_summary_has_noninferiority_beside_the_paired_test():
    steady = [-0.01, -0.012, -0.008, -0.011, -0.009]
    maps = pd.concat([planted({0.5: steady, 0.9: [-0.3] * 4 + [-0.31]}),
                      planted({0.5: [-0.2, -0.25, -0.3, -0.2, -0.22], 0.9: [-0.5] * 4 + [-0.51]}, method="random")])
    cfg = EvaluateConfig(test="ttest", margin=0.05)
    by_method = ev.paired_tests_by_method(maps, {"l1": [0.0, 0.5, 0.9], "random": [0.0, 0.5, 0.9]}, "ttest")
    doc = json.loads(json.dumps(ev.summarize(maps, by_method["l1"], cfg, by_method), allow_nan=False))
    assert doc["margin"] == 0.05 and doc["max_noninferior_sparsity"] == 0.5 and doc["noninferiority_note"] is None
    assert [(r["method"], r["sparsity"]) for r in doc["noninferiority"]] == \
        [("l1", 0.5), ("l1", 0.9), ("random", 0.0), ("random", 0.5), ("random", 0.9)]
    assert set(doc["noninferiority"][0]) == set(ev.NI_COLUMNS)
    assert doc["methods"]["l1"]["max_noninferior_level"] == 0.5
    assert doc["methods"]["random"]["max_noninferior_level"] == 0.0
    assert doc["methods"]["random"]["max_safe_level"] == 0.0 and "paired_tests" in doc  # kept unchanged
    with pytest.raises(ConfigError, match="evaluate.margin must be a relative mAP loss in \\(0, 1\\)"):
        EvaluateConfig(margin=0.0)


# --- stage ------------------------------------------------------------------------------


def write_fixture(root, seeds, levels=(0.0, 0.5, 0.9)):
    prepared = root / "data/prepared/tiny"
    prepared.mkdir(parents=True)
    labels = make_labels()
    labels.to_parquet(prepared / "labels_test.parquet", index=False)
    (prepared / "meta.json").write_text(json.dumps({"classes": CLASSES, "image_size": 32}))
    out = root / "data/predictions/tiny"
    out.mkdir(parents=True)
    for s in seeds:
        make_predictions(labels, levels, seed=s).to_parquet(out / f"seed-{s}.parquet", index=False)


def stage_params(seeds):
    return from_dict({"seeds": seeds, "data": {"name": "tiny"},
                      "prune": {"methods": ["l1", "random"], "levels": [0.0, 0.5, 0.9]}})


def test_stage_writes_all_outputs(tmp_path, monkeypatch):
    write_fixture(tmp_path, [0, 1, 2])
    monkeypatch.chdir(tmp_path)
    stage.run(stage_params([0, 1, 2]))
    per_class = pd.read_csv("metrics/tiny/per_class.csv")
    assert list(per_class.columns) == ["seed", "method", "level", "class_name", "ap", "auroc", "f1"]
    assert len(per_class) == 3 * 2 * 3 * 3
    by_seed = pd.read_csv("metrics/tiny/map_by_seed.csv")
    assert list(by_seed.columns) == ["seed", "method", "level", "map", "mean_auroc"] and len(by_seed) == 18
    curve = pd.read_csv("plots/tiny/map_vs_sparsity.csv")
    # The bootstrap interval (bootstrap.resamples, 1000 by default) follows the seed quartiles.
    assert list(curve.columns) == ["level", "method", "map", "map_q25", "map_q75", "map_lo", "map_hi"]
    assert len(curve) == 6 and (curve["map_lo"] <= curve["map_hi"]).all()
    summary = json.loads((tmp_path / "metrics/tiny/evaluate.json").read_text())
    for key in ("map_dense", "map_at_50", "map_at_90", "map_at_95", "max_safe_sparsity", "test",
                "correction", "alpha", "n_seeds", "min_attainable_p", "random_map_at_50"):
        assert key in summary
    assert summary["n_seeds"] == 3 and summary["map_at_95"] is None
    l1_dense = by_seed[(by_seed["method"] == "l1") & (by_seed["level"] == 0.0)]["map"]
    assert summary["map_dense"] == pytest.approx(l1_dense.median())


def test_stage_missing_predictions(tmp_path, monkeypatch):
    write_fixture(tmp_path, [0])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"seed-1\.parquet: not found; run `dvc repro prune@1` first"):
        stage.run(stage_params([0, 1]))
    assert not (tmp_path / "metrics").exists()


def test_stage_missing_prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="meta.json: not found; run `dvc repro prepare`"):
        stage.run(stage_params([0]))
