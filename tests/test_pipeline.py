"""End to end: `make repro` in a clone of the repository, tiny params (the shared tiny study).

Checks every output contract, the MLflow run structure in the repository's own sqlite
store, `dvc exp show --json`, that a second `dvc repro` reruns nothing, and that changing a
prune parameter reruns only prune and what follows it (those on copies of the study).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score

from workspaces import LEVELS, METHODS, N_BLOCKS, SEEDS, copy_workspace, env, run, stages_run

from cxrprune.core.classes import NIH_CXR_LT_CLASSES



@pytest.fixture(scope="module")
def study(tiny_study):
    """The shared tiny study (``make repro`` in a clone, see conftest.py): read only."""
    return tiny_study


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_the_contracts(study):
    ws, first = study
    ran = stages_run(first)
    for stage in ["generate", "prepare", "evaluate", "analyze", *[f"train@{s}" for s in SEEDS],
                  *[f"prune@{s}" for s in SEEDS]]:
        assert stage in ran, f"{stage} did not run:\n{first[-3000:]}"
    classes = list(NIH_CXR_LT_CLASSES)
    prep = ws / "data/prepared/synthetic"
    labels = pd.read_parquet(prep / "labels_test.parquet")
    assert list(labels.columns) == ["image_id", "patient_id", *classes]
    for s in SEEDS:
        assert (ws / f"data/models/synthetic/seed-{s}/model.pt").is_file()
        history = pd.read_csv(ws / f"data/models/synthetic/seed-{s}/history.csv")
        assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_map", "val_auroc", "seconds"]
        preds = pd.read_parquet(ws / f"data/predictions/synthetic/seed-{s}.parquet")
        assert list(preds.columns) == ["image_id", "method", "sparsity", *classes]
        assert len(preds) == len(labels) * N_BLOCKS
        assert set(preds["method"]) == set(METHODS) and sorted(preds["sparsity"].unique()) == LEVELS
        assert preds.loc[preds["method"] == "int8", "sparsity"].eq(0.0).all()
        eff = pd.read_csv(ws / f"data/predictions/synthetic/efficiency-seed-{s}.csv")
        assert list(eff.columns) == ["seed", "method", "level", "nonzero_params", "bytes", "engine", "threads",
                                     "latency_ms_b1", "latency_ratio", "latency_ratio_lo", "latency_ratio_hi",
                                     "images_per_s_b64"]
        assert len(eff) == N_BLOCKS + 1 and eff["method"].iloc[0] == "dense" and (eff["bytes"] > 0).all()
        assert eff["latency_ms_b1"].notna().all() if s == SEEDS[0] else eff["latency_ms_b1"].isna().all()
        assert set(eff.loc[eff["method"] == "int8", "engine"]) == {"onnxruntime-cpu"}
        assert preds[classes].dtypes.eq("float32").all()
        assert preds[classes].to_numpy().min() >= 0 and preds[classes].to_numpy().max() <= 1
    per_class = pd.read_csv(ws / "metrics/synthetic/per_class.csv")
    assert list(per_class.columns) == ["seed", "method", "level", "class_name", "ap", "auroc", "f1"]
    assert len(per_class) == len(SEEDS) * N_BLOCKS * len(classes)
    values = per_class[["ap", "auroc", "f1"]].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    # One AP recomputed from the predictions with scikit-learn, and the summary's dense mAP
    # recomputed from per_class.csv (median over seeds of the mean over classes).
    preds = pd.read_parquet(ws / "data/predictions/synthetic/seed-1.parquet")
    block = preds[(preds["method"] == "l1") & (preds["sparsity"] == 0.5)]
    assert block["image_id"].tolist() == labels["image_id"].tolist()
    cls = classes[3]
    row = per_class[(per_class["seed"] == 1) & (per_class["method"] == "l1") & (per_class["level"] == 0.5)
                    & (per_class["class_name"] == cls)]
    assert len(row) == 1
    assert row["ap"].iloc[0] == pytest.approx(average_precision_score(labels[cls], block[cls]), abs=1e-12)
    summary = json.loads((ws / "metrics/synthetic/summary.json").read_text())
    for key in ["map_dense", "map_at_50", "map_at_90", "max_safe_sparsity"]:
        assert key in summary
    dense = per_class[(per_class["method"] == "l1") & (per_class["level"] == 0.0)]
    assert summary["map_dense"] == pytest.approx(dense.groupby("seed")["ap"].mean().median(), abs=1e-12)
    assert 0 < summary["map_dense"] <= 1 and summary["max_safe_sparsity"] in LEVELS
    for group, keys in {"forgettability": ["first_drop_r", "first_drop_rho", "dap95_r", "dap95_rho"],
                        "fcd": ["freq_r", "freq_rho", "iou_r", "iou_rho"],
                        "pie": ["count", "ratio_3plus_findings", "ratio_flipped_label"]}.items():
        for key in keys:
            assert key in summary[group], f"{group}.{key}"
    for group in ("forgettability", "fcd"):
        for key, value in summary[group].items():
            if key.endswith(("_r", "_rho")) and value is not None:
                assert -1 <= value <= 1, f"{group}.{key} = {value}"
            if key.endswith("_p") and value is not None:
                assert 0 <= value <= 1, f"{group}.{key} = {value}"
    assert summary["pie"]["count"] == int(0.05 * len(labels))
    pies = pd.read_csv(ws / "metrics/synthetic/pies.csv")
    assert int(pies["is_pie"].sum()) == summary["pie"]["count"]
    for name in ["map_vs_sparsity", "forgettability_curves", "forgetting_vs_frequency", "fcd_pairs",
                 "pie_class_ratios", "pie_findings_ratios", "weight_histogram"]:
        assert (ws / f"plots/synthetic/{name}.csv").is_file(), name
    curves = pd.read_csv(ws / "plots/synthetic/forgettability_curves.csv")
    assert set(curves.columns) >= {"level", "class_name", "rel_dap"}
    assert len(list((ws / "plots/synthetic/figures").glob("*.png"))) >= 6
    # Operating points of every method, consistent with evaluate.json's per-method tests.
    evaluation = json.loads((ws / "metrics/synthetic/evaluate.json").read_text())
    assert set(summary["operating_points"]) == set(evaluation["methods"]) == set(METHODS)
    for method, point in summary["operating_points"].items():
        safe_map, safe_all = point["max_safe_level_map"], point["max_safe_level_all_classes"]
        assert safe_map == evaluation["methods"][method]["max_safe_level"]
        assert safe_all is None or (safe_all in LEVELS and safe_all <= safe_map), (method, point)
    assert summary["operating_points"]["l1"]["max_safe_level_map"] == summary["max_safe_sparsity"]
    tests = pd.read_csv(ws / "metrics/synthetic/class_loss_tests.csv")
    assert len(tests) == (N_BLOCKS - 1) * len(classes)  # every block but the dense one, l1@0
    assert (tests.loc[(tests["method"] == "random") & (tests["level"] == 0.0), "p_raw"] == 1.0).all()  # = dense
    efficiency = pd.read_csv(ws / "metrics/synthetic/efficiency.csv")
    assert list(efficiency.columns)[:12] == ["seed", "method", "level", "nonzero_params", "bytes", "engine",
                                             "threads", "latency_ms_b1", "latency_ratio", "latency_ratio_lo",
                                             "latency_ratio_hi", "images_per_s_b64"]
    pareto = pd.read_csv(ws / "plots/synthetic/pareto.csv")
    assert set(pareto["method"]) == {"dense", *METHODS} and len(pareto) == N_BLOCKS + 1
    assert (ws / "plots/synthetic/figures/pareto.png").is_file()


@pytest.mark.slow
def test_mlflow_has_one_run_per_seed_and_one_child_per_level(study):
    import mlflow

    ws, _ = study
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("cxrprune")
    seeds = mlflow.search_runs([exp.experiment_id], filter_string="tags.cxrprune_stage = 'train'")
    assert sorted(seeds["tags.seed"].astype(int)) == SEEDS
    for _, parent in seeds.iterrows():
        children = mlflow.search_runs([exp.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
        assert len(children) == N_BLOCKS
        assert {"metrics.map", "metrics.mean_auroc", "metrics.measured_sparsity", "metrics.ap/Hernia"} <= set(children)
        unstructured = children[children["tags.method"].isin(["l1", "random"])]
        assert unstructured["metrics.measured_sparsity"].sub(unstructured["metrics.sparsity"]).abs().max() < 1e-6
        channel = children[children["tags.method"] == "channel"]  # the achieved fraction of parameters removed
        assert channel["metrics.measured_sparsity"].sub(channel["metrics.sparsity"]).abs().max() < 0.02
        assert {"tags.git_commit", "tags.checkpoint_md5", "tags.dvc_stage"} <= set(seeds.columns)
        assert parent["tags.dvc_stage"] == f"train@{parent['tags.seed']}"


@pytest.mark.slow
def test_second_repro_reruns_nothing_and_exp_show_has_summary(study, tmp_path):
    ws = copy_workspace(study[0], tmp_path / "ws")
    again = run(["dvc", "repro"], ws)
    assert stages_run(again) == set(), again
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=ws, env=env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=True)
    text = json.dumps(json.loads(proc.stdout))
    assert "metrics/synthetic/summary.json" in text and "map_dense" in text and "first_drop_rho" in text
    assert "operating_points" in text and "max_safe_level_all_classes" in text
    # dvc renders the Pareto panels with the repository's template.
    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=ws, env=env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=True)
    shown = json.loads(proc.stdout)["data"]
    pareto = [k for k in shown if k.startswith("Pareto")]
    assert len(pareto) == 4, sorted(shown)
    for key in pareto:
        spec = shown[key][0]["content"]
        assert "layer" in spec and spec["encoding"]["color"]["field"] == "method"
        assert any(row.get("method") == "l1" for row in spec["data"]["values"])


@pytest.mark.slow
def test_editing_an_analysis_module_reruns_only_analyze(study, tmp_path):
    """dvc.yaml's source deps are each stage's import closure: an edit in analysis/fcd.py
    touches no model and no prediction table."""
    ws = copy_workspace(study[0], tmp_path / "ws")
    fcd = ws / "src/cxrprune/analysis/fcd.py"
    fcd.write_text(fcd.read_text() + "\n# an edit\n")
    ran = stages_run(run(["dvc", "repro"], ws))
    assert ran == {"analyze"}, ran


@pytest.mark.slow
def test_changing_a_prune_parameter_reruns_only_prune_and_after(study, tmp_path):
    ws = copy_workspace(study[0], tmp_path / "ws")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["prune"]["methods"] = ["l1"]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Up to evaluate, the first stage after prune: what follows it is DVC's own graph walk (and
    # analyze's rerun is the analysis-edit test's), and the stages after evaluate took half of
    # this test's 80-100 s.
    out = run(["dvc", "repro", "evaluate"], ws)
    ran = stages_run(out)
    assert ran == {*[f"prune@{s}" for s in SEEDS], "evaluate"}, ran
    preds = pd.read_parquet(ws / "data/predictions/synthetic/seed-0.parquet")
    assert set(preds["method"]) == {"l1"}
