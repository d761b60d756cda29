"""The analyze stage end to end on a tiny fake workspace with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cxrprune.analysis import evaluate, uncertainty
from cxrprune.core import config, upstream
from cxrprune.core.errors import DataError
from cxrprune.core.layout import ANALYZE_FIGURES
from cxrprune.stages import analyze
from cxrprune.training.models import build_model, prunable_parameters

CLASSES = ["No Finding", "Effusion", "Nodule", "Hernia"]
TRAIN_COUNTS = {"No Finding": 50, "Effusion": 30, "Nodule": 12, "Hernia": 4}
# Curves are rel(k) = -slope * k (same for both seeds), so the first k with rel < -0.2 is
# the first level above 0.2 / slope: 0.7, 0.45, 0.25, and never for Hernia (max -0.1425).
SLOPE = {"No Finding": 0.3, "Effusion": 0.5, "Nodule": 1.0, "Hernia": 0.15}
FIRST_DROP = {"No Finding": 0.7, "Effusion": 0.45, "Nodule": 0.25, "Hernia": None}
SEEDS = [0, 1]
AP0 = (0.8, 0.6)  # dense AP of every class, per seed
# Dense AUROC: Hernia's (8 of 40 test images positive) cannot be told from 0.5, so the
# chance-corrected statistics leave it out; its AUROC falls like its AP (same slope).
AUROC0 = {"No Finding": 0.9, "Effusion": 0.9, "Nodule": 0.9, "Hernia": 0.6}
# rel(k) = -slope * k at both seeds: Nodule is the first class to lose more than 12% (at 0.15;
# no class sits on the boundary at a level where it decides the operating point).
CLASS_TOLERANCE = 0.12
N_TEST = 40
LEVELS = config.default_levels()


def _frame(y: np.ndarray, prefix: str) -> pd.DataFrame:
    df = pd.DataFrame(y.astype(np.int8), columns=CLASSES)
    df.insert(0, "patient_id", [f"{i // 2:08d}" for i in range(len(y))])
    df.insert(0, "image_id", [f"{prefix}{i:05d}.png" for i in range(len(y))])
    return df


def _train_labels() -> pd.DataFrame:
    """One block of single-finding images per class, so column sums are TRAIN_COUNTS exactly."""
    rows = [np.eye(len(CLASSES), dtype=np.int8)[j] for j, c in enumerate(CLASSES) for _ in range(TRAIN_COUNTS[c])]
    return _frame(np.array(rows), "tr")


def _test_labels(rng: np.random.Generator) -> pd.DataFrame:
    y = np.zeros((N_TEST, len(CLASSES)), dtype=np.int8)
    y[:, 1:] = rng.random((N_TEST, 3)) < np.array([0.4, 0.3, 0.2])
    y[:4, 1:] = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]])  # 3+ findings occur
    y[:, 0] = y[:, 1:].sum(axis=1) == 0  # No Finding never co-occurs
    return _frame(y, "te")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return tiny_workspace(tmp_path, monkeypatch)


def tiny_workspace(tmp_path, monkeypatch):
    """Prepared labels, truth, predictions, evaluate outputs and a model of a tiny dataset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    rng = np.random.default_rng(7)
    params = config.from_dict({"seeds": SEEDS, "data": {"name": "tiny", "image_size": 32},
                               "train": {"arch": "resnet10"}, "mlflow": {"experiment": "analyze-test"},
                               "analyze": {"class_tolerance": CLASS_TOLERANCE}})

    prepared = tmp_path / "data/prepared/tiny"
    prepared.mkdir(parents=True)
    train = _train_labels()
    test = _test_labels(rng)
    for split, df in (("train", train), ("test", test)):
        df.to_parquet(prepared / f"labels_{split}.parquet", index=False)
        np.save(prepared / f"images_{split}.npy", np.zeros((len(df), 32, 32), dtype=np.uint8))
    (prepared / "meta.json").write_text(json.dumps({"classes": CLASSES, "image_size": 32, "source": "synthetic",
                                                    "counts": {"train": len(train), "test": N_TEST}}))
    truth = pd.DataFrame({"image_id": list(train["image_id"]) + list(test["image_id"]),
                          "split": ["train"] * len(train) + ["test"] * N_TEST})
    truth["flipped"] = (rng.random(len(truth)) < 0.3).astype(np.int8)
    truth["flipped_class"] = np.where(truth["flipped"] == 1, "Effusion", "")
    truth["quality"] = rng.random(len(truth))
    truth["degradation"] = rng.choice(["none", "blur", "noise", "exposure"], len(truth))
    truth.to_parquet(prepared / "truth.parquet", index=False)

    pred_dir = tmp_path / "data/predictions/tiny"
    pred_dir.mkdir(parents=True)
    for seed in SEEDS:
        blocks = []
        for method in ("l1", "random"):
            for k in LEVELS:
                block = pd.DataFrame(rng.random((N_TEST, len(CLASSES))).astype(np.float32), columns=CLASSES)
                block.insert(0, "sparsity", np.float64(k))
                block.insert(0, "method", method)
                block.insert(0, "image_id", test["image_id"])
                blocks.append(block)
        pd.concat(blocks, ignore_index=True).to_parquet(pred_dir / f"seed-{seed}.parquet", index=False)

    rows = []
    for seed, ap0 in zip(SEEDS, AP0):
        for method in ("l1", "random"):
            for k in LEVELS:
                for c in CLASSES:
                    ap = ap0 * (1 - SLOPE[c] * k) if method == "l1" else ap0 * (1 - k)
                    auroc = 0.5 + (AUROC0[c] - 0.5) * (1 - SLOPE[c] * k) if method == "l1" else 0.7
                    rows.append({"seed": seed, "method": method, "level": k, "class_name": c, "ap": ap,
                                 "auroc": auroc, "f1": 0.3})
    metrics = tmp_path / "metrics/tiny"
    metrics.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(metrics / "per_class.csv", index=False)
    # The per-method paired tests as the evaluate stage writes them (real functions, ttest, Holm).
    maps = evaluate.map_table(pd.DataFrame(rows))
    ev_cfg = config.EvaluateConfig(test="ttest")
    by_method = evaluate.paired_tests_by_method(maps, {"l1": LEVELS, "random": LEVELS}, "ttest", "holm", 0.05)
    real = evaluate.summarize(maps, by_method["l1"], ev_cfg, by_method)
    (metrics / "evaluate.json").write_text(json.dumps({
        "map_dense": 0.7, "map_at_50": 0.6, "map_at_90": 0.4, "map_at_95": 0.3, "max_safe_sparsity": 0.5,
        **{k: real[k] for k in ("test", "correction", "alpha", "n_seeds", "methods")}}))
    # The prune stage's measured efficiency (latency for the first seed only, NaN for the others).
    for seed in SEEDS:
        eff = [{"seed": seed, "method": m, "level": k, "nonzero_params": int(1e6 * (1 - k)) + 10,
                "bytes": int(4e6 * (1 - k)) + 1000 + seed, "engine": "torch-cpu", "threads": 1,
                "latency_ms_b1": (10.0 - 4 * k - (m == "random")) if seed == SEEDS[0] else np.nan,
                "latency_ratio": (1.0 - 0.4 * k) if seed == SEEDS[0] else np.nan,
                "latency_ratio_lo": (0.9 - 0.4 * k) if seed == SEEDS[0] else np.nan,
                "latency_ratio_hi": (1.1 - 0.4 * k) if seed == SEEDS[0] else np.nan,
                "images_per_s_b64": (100.0 + 50 * k) if seed == SEEDS[0] else np.nan}
               for m, k in [("dense", 0.0)] + [(m, k) for m in ("l1", "random") for k in LEVELS]]
        pd.DataFrame(eff).to_csv(pred_dir / f"efficiency-seed-{seed}.csv", index=False)
    curve = pd.DataFrame([{"level": k, "method": m, "map": 0.7 - 0.3 * k * (m == "random") - 0.2 * k,
                           "map_q25": 0.65 - 0.2 * k, "map_q75": 0.75 - 0.2 * k}
                          for m in ("l1", "random") for k in LEVELS])
    (tmp_path / "plots/tiny").mkdir(parents=True)
    curve.to_csv(tmp_path / "plots/tiny/map_vs_sparsity.csv", index=False)

    torch.manual_seed(0)
    model = build_model("resnet10", len(CLASSES))
    model_dir = tmp_path / "data/models/tiny/seed-0"
    model_dir.mkdir(parents=True)
    torch.save({"arch": "resnet10", "classes": CLASSES, "image_size": 32, "state_dict": model.state_dict(),
                "epoch": 1, "val_loss": 0.5}, model_dir / "model.pt")
    n_weights = sum(m.weight.numel() for m, _ in prunable_parameters(model))
    # per_class.csv above is hand-made, not computed from the predictions: no bootstrap
    # resamples of it (tests/test_bootstrap.py runs evaluate then analyze with them).
    uncertainty.save(tmp_path / "data/bootstrap/tiny/ap_resamples.npz", None)
    return params, tmp_path, test, train, truth, n_weights


def _no_nan(text: str) -> dict:
    def refuse(name):
        raise AssertionError(f"summary.json holds {name}")
    return json.loads(text, parse_constant=refuse)


def test_analyze_end_to_end(workspace):
    params, root, test, train, truth, n_weights = workspace
    counts = train[CLASSES].sum()
    assert counts.to_dict() == TRAIN_COUNTS  # the fixture's own premise

    analyze.run(params)

    # summary.json: copied evaluate keys, nested sections, strict JSON.
    summary = _no_nan((root / "metrics/tiny/summary.json").read_text())
    assert summary["map_dense"] == 0.7 and summary["max_safe_sparsity"] == 0.5
    assert {"map_at_50", "map_at_90", "map_at_95"} <= summary.keys()
    f = summary["forgettability"]
    assert f["first_drop_n"] == 3 and f["first_drop_not_reached"] == 1
    reached = [c for c in CLASSES if FIRST_DROP[c] is not None]
    x = [FIRST_DROP[c] for c in reached]
    y = np.log([TRAIN_COUNTS[c] for c in reached])
    assert f["first_drop_r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
    assert f["first_drop_rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    dap = [-SLOPE[c] * 0.95 for c in CLASSES]
    assert f["dap95_r"] == pytest.approx(stats.pearsonr(dap, np.log(list(TRAIN_COUNTS.values()))).statistic,
                                         abs=1e-6)
    for key in ("first_drop_p", "dap95_rho", "dap95_p"):
        assert key in f
    # Chance-corrected: Hernia left out (not learned), listed with its reason beside the paper's
    # first drop it never reaches; retained AUROC - 1 = -slope * 0.95, as the raw dAP here.
    learned = ["No Finding", "Effusion", "Nodule"]
    ln_learned = np.log([TRAIN_COUNTS[c] for c in learned])
    assert f["chance_corrected_n_classes"] == 3 and f["dauroc95_n"] == 3 and f["dap95_chance_corrected_n"] == 3
    assert f["dauroc95_rho"] == pytest.approx(stats.spearmanr([-SLOPE[c] for c in learned], ln_learned).statistic)
    assert f["dap95_same_classes_rho"] == f["dauroc95_rho"]
    assert f["excluded_classes"] == [
        {"class": "Hernia", "reason": "first drop not reached (relative AP change never below -0.2)",
         "statistics": ["first_drop"]},
        {"class": "Hernia", "reason": "not learned: dense AUROC CI includes 0.5",
         "statistics": ["first_drop_chance_corrected", "dap95_chance_corrected", "dap95_same_classes",
                        "first_drop_auroc", "dauroc95", "dauroc_half"]}]
    # Linear curves keep the classes' order at every level, so the half-life level's ranks are 95%'s.
    assert f["dauroc_half_n"] == 3 and f["dauroc_half_rho"] == pytest.approx(f["dauroc95_rho"])
    assert 0 < f["dauroc_half_level"] <= 0.95
    for key in ("dap95_chance_corrected_rho", "dap95_chance_corrected_rho_p", "first_drop_chance_corrected_rho",
                "first_drop_auroc_rho", "chance_corrected_test"):
        assert key in f
    c = summary["fcd"]
    assert set(c) >= {"freq_r", "freq_rho", "iou_r", "iou_rho", "n_pairs", "freq_given_iou_rho", "freq_given_iou_rho_p"}
    assert c["n_pairs"] == 6 and c["n_classes_used"] == 4 and c["classes_excluded"] == []
    # 4 classes: all 4! class permutations are enumerated, so every Mantel p is a multiple of 1/24.
    assert c["p_method"] == "mantel, all 24 class permutations (exact)"
    for key in ("freq_p", "freq_rho_p", "iou_p", "iou_rho_p"):
        assert c[key] * 24 == pytest.approx(round(c[key] * 24), abs=1e-9) and 0 < c[key] <= 1
    pie = summary["pie"]
    assert pie["count"] == int(0.05 * N_TEST) == 2
    assert {"ratio_3plus_findings", "ratio_flipped_label", "mean_quality_pie", "mean_quality_nonpie"} <= pie.keys()
    assert "class_ratio_vs_frequency_rho" not in pie  # the statistic random PIEs made significant is gone
    assert -1 <= pie["class_enrichment_rho"] <= 1 and 0 < pie["class_enrichment_p"] <= 1
    assert pie["class_enrichment_test"].startswith("Spearman rho of the smoothed log PIE enrichment")
    yt = test[CLASSES].to_numpy()
    assert pie["class_enrichment_n_classes"] == int((yt.sum(axis=0) > 0).sum())
    assert pie["class_enrichment_excluded"] == [{"class": c, "reason": "no test positive"}
                                                for c, n in zip(CLASSES, yt.sum(axis=0)) if n == 0]
    assert summary["weights"]["n_weights"] == n_weights
    assert 0 <= summary["weights"]["frac_below_1e-2"] <= 1

    # forgettability.csv: first drops by hand, not reached -> empty cell.
    forget = pd.read_csv(root / "metrics/tiny/forgettability.csv", keep_default_na=False, na_values=[""])
    assert list(forget.columns) == ["class_name", "train_count", "ln_train_count", "first_drop", "dap95",
                                    "test_prevalence", "dense_auroc", "dense_auroc_lo", "dense_auroc_hi",
                                    "retained_95", "retained_auroc_95", "first_drop_chance_corrected",
                                    "first_drop_auroc", "excluded_reason"]
    prevalence = test[CLASSES].mean()
    for _, row in forget.iterrows():
        c = row["class_name"]
        expected = FIRST_DROP[c]
        assert (math.isnan(row["first_drop"]) if expected is None else row["first_drop"] == expected)
        assert row["dap95"] == pytest.approx(-SLOPE[c] * 0.95, rel=1e-9)
        assert row["train_count"] == TRAIN_COUNTS[c]
        assert row["test_prevalence"] == pytest.approx(prevalence[c])
        # retained = (AP_95 - prev) / (AP_0 - prev) per seed, median (of two: mean) over seeds
        retained = np.mean([(a * (1 - SLOPE[c] * 0.95) - prevalence[c]) / (a - prevalence[c]) for a in AP0])
        assert row["retained_95"] == pytest.approx(retained, rel=1e-9)
        assert row["retained_auroc_95"] == pytest.approx(1 - SLOPE[c] * 0.95, rel=1e-9)
        assert row["dense_auroc"] == pytest.approx(AUROC0[c])
        assert pd.isna(row["excluded_reason"]) if c != "Hernia" else \
            row["excluded_reason"] == "not learned: dense AUROC CI includes 0.5"

    # pies.csv: Spearman recomputed with scipy from the raw prediction files.
    def ensemble(k):
        frames = [pd.read_parquet(root / f"data/predictions/tiny/seed-{s}.parquet") for s in SEEDS]
        sel = [fr[(fr["method"] == "l1") & (fr["sparsity"] == k)][CLASSES].to_numpy(float) for fr in frames]
        return np.mean(sel, axis=0)
    dense, sparse = ensemble(0.0), ensemble(0.9)
    rho = np.array([stats.spearmanr(a, b).statistic for a, b in zip(dense, sparse)])
    pies_csv = pd.read_csv(root / "metrics/tiny/pies.csv")
    assert list(pies_csv.columns) == ["image_id", "spearman", "is_pie", "flipped", "quality"]
    assert len(pies_csv) == N_TEST and pies_csv["spearman"].is_monotonic_increasing
    by_id = pies_csv.set_index("image_id")
    np.testing.assert_allclose(by_id.loc[test["image_id"], "spearman"], rho, atol=1e-9)
    expected_pies = set(test["image_id"].to_numpy()[np.argsort(rho, kind="stable")[:2]])
    assert set(pies_csv.loc[pies_csv["is_pie"], "image_id"]) == expected_pies
    t = truth.set_index("image_id")
    assert (by_id["flipped"] == t.loc[by_id.index, "flipped"]).all()

    # Plot data for dvc plots.
    plots = root / "plots/tiny"
    long = pd.read_csv(plots / "forgettability_curves.csv")
    assert list(long.columns) == ["level", "class_name", "rel_dap"] and len(long) == 19 * len(CLASSES)
    assert list(pd.read_csv(plots / "forgetting_vs_frequency.csv").columns) == \
        ["class_name", "ln_train_count", "first_drop", "dap95"]
    pairs = pd.read_csv(plots / "fcd_pairs.csv")
    assert list(pairs.columns) == ["class_a", "class_b", "pair", "fcd", "abs_dlnf", "iou_quarter"]
    assert len(pairs) == 6
    # Label-weighted IoU of (Effusion, Nodule) by explicit loops over the test images.
    n_labels = yt.sum(axis=1)
    fa = n_labels[yt[:, 1] == 1].sum()
    fb = n_labels[yt[:, 2] == 1].sum()
    both = int(((yt[:, 1] == 1) & (yt[:, 2] == 1)).sum())
    row = pairs[(pairs["class_a"] == "Effusion") & (pairs["class_b"] == "Nodule")].iloc[0]
    assert row["iou_quarter"] == pytest.approx((both / (fa + fb - both)) ** 0.25)
    assert row["abs_dlnf"] == pytest.approx(abs(math.log(fa) - math.log(fb)))
    assert row["fcd"] == pytest.approx(math.sqrt(sum((0.5 * k - 1.0 * k) ** 2 for k in LEVELS[1:])), rel=1e-9)
    ratios = pd.read_csv(plots / "pie_class_ratios.csv")
    assert list(ratios.columns) == ["class_name", "ratio", "enrichment"] and ratios["class_name"].tolist() == CLASSES
    # Smoothed log enrichment by hand: (PIE positives + 0.5) / (positives x PIE rate + 0.5).
    flags = test["image_id"].isin(pies_csv.loc[pies_csv["is_pie"], "image_id"]).to_numpy()
    k, n = yt[flags].sum(axis=0), yt.sum(axis=0)
    np.testing.assert_allclose(ratios["enrichment"], np.log((k + 0.5) / (n * flags.mean() + 0.5)), rtol=1e-12)
    bins = pd.read_csv(plots / "pie_findings_ratios.csv", dtype={"findings": str})
    assert bins["findings"].tolist() == ["0", "1", "2", "3", "4+"]
    hist = pd.read_csv(plots / "weight_histogram.csv")
    assert list(hist.columns) == ["abs_weight", "count"] and len(hist) == params.analyze.histogram_bins
    assert hist["count"].sum() == n_weights

    for name in ANALYZE_FIGURES:
        png = plots / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(root.rglob(".*.png")) and not list(root.rglob("*.tmp"))  # no atomic-write leftovers

    # MLflow: one "analysis" run with dotted metrics and the figures.
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("analyze-test")
    runs = client.search_runs([exp.experiment_id], "tags.cxrprune_stage = 'analyze'")
    assert len(runs) == 1
    r = runs[0]
    assert r.info.run_name == "analysis"
    assert r.data.metrics["forgettability.first_drop_n"] == 3
    assert r.data.metrics["pie.count"] == 2
    assert r.data.metrics["map_dense"] == pytest.approx(0.7)
    arts = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
    assert arts == {f"figures/{n}" for n in ANALYZE_FIGURES}
    assert r.data.metrics["operating_points.l1.max_safe_level_all_classes"] == pytest.approx(0.1)
    assert r.data.metrics["operating_points.l1.gap"] == pytest.approx(0.85)

    _check_operating_points(root, summary)

    # Without the synthetic truth table the synthetic-only keys and columns are absent.
    (root / "data/prepared/tiny/truth.parquet").unlink()
    analyze.run(params)
    summary = _no_nan((root / "metrics/tiny/summary.json").read_text())
    assert "ratio_flipped_label" not in summary["pie"] and "mean_quality_pie" not in summary["pie"]
    assert list(pd.read_csv(root / "metrics/tiny/pies.csv").columns) == ["image_id", "spearman", "is_pie"]


def _check_operating_points(root, summary):
    """Operating points, efficiency join and Pareto table of the fixture, by hand."""
    # (a) 2 seeds, paired t-test, Holm over 19 levels: no level is significant, so mAP is safe
    # up to 0.95; (b) Nodule (slope 1.0) loses more than 12% from 0.15 on (random: every class
    # from 0.15), so the operating point is 0.1 and the gap 0.85; at 0.95 all four classes lose.
    for method in ("l1", "random"):
        p = summary["operating_points"][method]
        assert p["max_safe_level_map"] == 0.95 and p["max_safe_level_all_classes"] == 0.1
        assert p["gap"] == pytest.approx(0.85) and p["n_classes_losing_at_map_point"] == 4
        assert p["classes_losing_at_map_point"] == sorted(CLASSES)
        assert p["latency_ms_b1"] == pytest.approx(10.0 - 0.4 - (method == "random"))  # seed 0's measurement
        assert p["bytes"] == pytest.approx(np.median([int(4e6 * 0.9) + 1000 + s for s in SEEDS]))
    worst_l1 = -max(SLOPE.values()) * 0.1
    assert summary["operating_points"]["l1"]["worst_class_rel_dap"] == pytest.approx(worst_l1)
    assert summary["operating_point_rule"]["class_tolerance"] == CLASS_TOLERANCE
    assert summary["operating_point_rule"]["test"] == "ttest"

    per_class = pd.read_csv(root / "metrics/tiny/per_class.csv")
    eff = pd.read_csv(root / "metrics/tiny/efficiency.csv")
    assert list(eff.columns) == ["seed", "method", "level", "nonzero_params", "bytes", "engine", "threads",
                                 "latency_ms_b1", "latency_ratio", "latency_ratio_lo", "latency_ratio_hi",
                                 "images_per_s_b64", "map", "worst_class_rel_dap"]
    assert len(eff) == len(SEEDS) * (2 * len(LEVELS) + 1)
    maps = per_class.groupby(["seed", "method", "level"])["ap"].mean()
    for row in eff.itertuples():
        ref = ("l1", 0.0) if row.method == "dense" else (row.method, row.level)
        assert row.map == pytest.approx(maps[(row.seed, *ref)], abs=1e-12)
    tests = pd.read_csv(root / "metrics/tiny/class_loss_tests.csv")
    assert len(tests) == (2 * len(LEVELS) - 1) * len(CLASSES)  # every block but the dense one
    nodule = tests[(tests["method"] == "l1") & (tests["class_name"] == "Nodule")].set_index("level")
    assert not nodule.loc[0.1, "loses"] and nodule.loc[0.15, "loses"]

    pareto = pd.read_csv(root / "plots/tiny/pareto.csv")
    assert {"method", "level", "label", "latency_ms_b1", "megabytes", "map", "worst_class_rel_dap"} <= set(pareto)
    assert len(pareto) == 2 * len(LEVELS) + 1 and (pareto["method"] == "dense").sum() == 1
    l1_05 = pareto[(pareto["method"] == "l1") & np.isclose(pareto["level"], 0.5)].iloc[0]
    assert l1_05["latency_ms_b1"] == pytest.approx(8.0) and l1_05["label"] == "l1@0.5"
    assert l1_05["map"] == pytest.approx(np.median([maps[(s, "l1", 0.5)] for s in SEEDS]))


def test_analyze_reads_tables_written_before_the_level_column(workspace):
    """per_class.csv and map_vs_sparsity.csv from before issue 21 name the level column
    ``sparsity``: analyze reads them with it renamed (core.upstream.read_level_table) and
    writes the same tables as from the new header."""
    params, root, *_ = workspace
    analyze.run(params)
    written = sorted(p for p in root.glob("*/tiny/*") if p.suffix in (".csv", ".json"))
    new = {p: p.read_bytes() for p in written}
    for path in (root / "metrics/tiny/per_class.csv", root / "plots/tiny/map_vs_sparsity.csv"):
        table = pd.read_csv(path)
        assert "level" in table.columns
        table.rename(columns={"level": "sparsity"}).to_csv(path, index=False)
        old = upstream.read_level_table(path)
        assert list(old.columns) == list(table.columns) and old.equals(table)
    analyze.run(params)
    changed = [p.name for p in written if p.read_bytes() != new[p]
               and p.name not in ("per_class.csv", "map_vs_sparsity.csv")]
    assert changed == []


def test_analyze_without_efficiency_files(workspace):
    """Imported predictions come without models: no efficiency rows, operating points still."""
    params, root, *_ = workspace
    for seed in SEEDS:
        (root / f"data/predictions/tiny/efficiency-seed-{seed}.csv").unlink()
    analyze.run(params)
    summary = _no_nan((root / "metrics/tiny/summary.json").read_text())
    p = summary["operating_points"]["l1"]
    assert p["max_safe_level_all_classes"] == 0.1 and p["latency_ms_b1"] is None and p["bytes"] is None
    assert len(pd.read_csv(root / "metrics/tiny/efficiency.csv")) == 0
    assert (root / "plots/tiny/figures/pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_efficiency_inputs_checked_before_work(workspace):
    params, root, *_ = workspace
    eff = root / "data/predictions/tiny/efficiency-seed-1.csv"
    table = pd.read_csv(eff)
    table[table["method"] != "random"].to_csv(eff, index=False)  # a stale file: random not measured
    with pytest.raises(DataError, match=r"seed 1.*random.*prune@1"):
        analyze.run(params)
    eff.unlink()  # seed 0 has a file, seed 1 not
    with pytest.raises(DataError, match=r"efficiency-seed-1.csv: not found.*prune@1"):
        analyze.run(params)
    assert not (root / "metrics/tiny/summary.json").exists()


def test_missing_inputs_name_the_stage(workspace):
    params, root, *_ = workspace
    (root / "data/predictions/tiny/seed-1.parquet").unlink()
    with pytest.raises(DataError, match=r"prune@1"):
        analyze.run(params)
    (root / "metrics/tiny/per_class.csv").unlink()
    with pytest.raises(DataError, match="dvc repro evaluate"):
        analyze.run(params)
    assert not (root / "metrics/tiny/summary.json").exists()  # nothing half-written


def test_figures_survive_degenerate_inputs(tmp_path):
    """No class reaches the drop, no PIE ratio is defined, an all-zero model: still valid PNGs."""
    from cxrprune.analysis import figures, forgetting

    table = pd.DataFrame({"class_name": ["A", "B", "C"], "ln_train_count": [3.0, 2.0, 1.0],
                          "first_drop": [np.nan] * 3, "dap95": [-0.1, -0.1, np.nan]})
    none = forgetting.correlate(np.array([]), np.array([]))
    figures.forgetting_vs_frequency(table, none, none, tmp_path / "f.png")
    ratios = pd.DataFrame({"class_name": ["A", "B"], "ratio": [np.nan, 0.0], "enrichment": [np.nan, -0.4]})
    bins = pd.DataFrame({"findings": ["0", "1", "2", "3", "4+"], "ratio": [np.nan] * 5})
    figures.pie_ratios(ratios, bins, tmp_path / "p.png")
    from cxrprune.analysis import weights
    figures.weight_histogram(weights.magnitude_histogram(np.zeros(10), 10), tmp_path / "w.png",
                             weights.magnitude_summary(np.zeros(10)))
    for name in ("f.png", "p.png", "w.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
