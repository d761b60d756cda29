"""The PIE treatment study (issue 12): folds, out-of-fold scores, treatments, truth, outcome.

Oracles: hand-made cases and counts, scipy (Spearman, Fisher, paired t-test and its CI; the
minimum detectable effect by simulating the paired t-test),
the training loop itself (a subset and unit weights give the plain loop's exact weights), and
the study's dvc.yaml checked against the import closure and the layout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats
from stage_deps import check_study_file

from cxrprune.analysis.pies import align_truth
from cxrprune.core.config import TrainConfig, from_dict
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.core.layout import RAY_LOG_DIR, Layout
from cxrprune.pietreatment import folds as oof
from cxrprune.pietreatment import outcome, verdict
from cxrprune.pietreatment.treatments import matched_random_drop, strata, training_set
from cxrprune.training.loop import train_model

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "pie-treatment" / "dvc.yaml"
CLASSES = ["A", "B", "C", "D"]


def labels_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """A training table: 1-3 images per patient, class D rare (about 10% of images)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for i in range(int(rng.integers(1, 4))):
            y = (rng.random(len(CLASSES)) < [0.5, 0.3, 0.2, 0.1]).astype(np.int8)
            rows.append({"image_id": f"{p:05d}_{i:03d}.png", "patient_id": f"{p:05d}", **dict(zip(CLASSES, y))})
    return pd.DataFrame(rows)


# --- folds and out-of-fold scores ------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
def test_folds_are_patient_disjoint_and_every_image_is_scored_once_by_models_that_never_saw_it(k):
    labels = labels_table()
    fold = oof.assign_folds(labels, CLASSES, k, seed=0)
    assert sorted(np.unique(fold)) == list(range(k))
    # one fold per patient
    assert labels.assign(fold=fold).groupby("patient_id")["fold"].nunique().max() == 1
    oof.check_folds(labels, CLASSES, fold, k)  # every fold has every class
    scored_count = np.zeros(len(labels), dtype=int)
    for f in range(k):
        trained_on, scored = oof.fold_rows(fold, f)
        scored_count[scored] += 1
        assert not set(trained_on) & set(scored)
        assert not set(labels["patient_id"].iloc[trained_on]) & set(labels["patient_id"].iloc[scored])
        assert len(trained_on) + len(scored) == len(labels)
    assert (scored_count == 1).all()
    # same seed, same folds; the stratification puts the rare class in every fold
    np.testing.assert_array_equal(fold, oof.assign_folds(labels, CLASSES, k, seed=0))


def test_out_of_fold_correlation_takes_each_image_from_its_own_fold_ensemble():
    labels = labels_table(30)
    fold = oof.assign_folds(labels, CLASSES, 2, seed=1)
    ids = labels["image_id"].to_numpy()
    rng = np.random.default_rng(3)
    scored, expected = {}, np.full(len(labels), np.nan)
    for f in (0, 1):
        rows = np.flatnonzero(fold == f)
        pairs = []
        for _ in range(2):  # two seeds
            d, p = rng.random((len(rows), 4)), rng.random((len(rows), 4))
            pairs.append((pd.DataFrame(d, columns=CLASSES).assign(image_id=ids[rows]),
                          pd.DataFrame(p, columns=CLASSES).assign(image_id=ids[rows])))
        scored[f] = pairs
        dense = np.mean([a[CLASSES].to_numpy() for a, _ in pairs], axis=0)
        pruned = np.mean([b[CLASSES].to_numpy() for _, b in pairs], axis=0)
        expected[rows] = [stats.spearmanr(x, y).statistic for x, y in zip(dense, pruned)]
    corr = oof.out_of_fold_correlation(fold, ids, scored, CLASSES)
    np.testing.assert_allclose(corr, expected, atol=1e-12)
    # a table listing another fold's images is refused
    bad = {0: scored[1], 1: scored[1]}
    with pytest.raises(DataError, match="fold 0"):
        oof.out_of_fold_correlation(fold, ids, bad, CLASSES)


def test_a_fold_without_a_positive_of_a_class_is_a_config_error_naming_the_key():
    labels = labels_table(20)
    labels["D"] = 0
    labels.loc[0, "D"] = 1  # one positive image: one fold lacks it
    fold = oof.assign_folds(labels, CLASSES, 2, seed=0)
    with pytest.raises(ConfigError, match=r"pie_treatment\.folds.*'D'"):
        oof.check_folds(labels, CLASSES, fold, 2)


def test_a_pie_fraction_that_selects_no_image_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"analyze\.pie_fraction"):
        oof.check_fraction(0.01, 99)
    oof.check_fraction(0.01, 100)
    assert oof.train_pies(np.arange(100.0), 0.05).sum() == 5


@pytest.mark.parametrize(("key", "value"), [("weight", 0.0), ("weight", -1.0), ("folds", [0]), ("folds", [0, 2]),
                                            ("treatments", ["remove"]), ("seeds", [])])
def test_bad_pie_treatment_params_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"pie_treatment\.{key}"):
        from_dict({"pie_treatment": {key: value}})


def test_bad_params_are_one_error_line_from_the_command(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pie_treatment"]["weight"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "cxrprune", "--params", str(tmp_path / "params.yaml"), "pie-score"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("cxrprune: error:")
    assert "pie_treatment.weight" in proc.stderr and "Traceback" not in proc.stderr


# --- what PIEs are, against the truth ----------------------------------------------------------


def test_precision_and_recall_against_truth_on_a_hand_made_case():
    truth = pd.DataFrame({"image_id": [f"i{i}" for i in range(10)], "split": "train",
                          "flipped": [1, 1, 0, 0, 0, 0, 0, 0, 0, 1],
                          "degradation": ["none", "blur", "blur", "none", "none", "noise", "none", "none", "none",
                                          "none"], "quality": 1.0})
    truth = pd.concat([truth, truth.assign(split="test", flipped=0)])  # the test rows must not be used
    is_pie = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    aligned = align_truth(truth, [f"i{i}" for i in range(10)], split="train")
    got = oof.truth_summary(aligned, is_pie)
    f, d = got["flipped"], got["degraded"]
    # flipped: PIEs {0, 2} hold one of {0, 1, 9}
    assert (f["hits"], f["precision"], f["recall"], f["base_rate"]) == (1, 0.5, pytest.approx(1 / 3), 0.3)
    assert f["lift"] == pytest.approx(0.5 / 0.3) and f["random_recall"] == 0.2
    assert f["p"] == pytest.approx(stats.fisher_exact([[1, 1], [2, 6]], alternative="greater").pvalue)
    # degraded: {1, 2, 5}; PIE 2 is one
    assert (d["hits"], d["precision"], d["recall"], d["base_rate"]) == (1, 0.5, pytest.approx(1 / 3), 0.3)


# --- treatments --------------------------------------------------------------------------------


def test_treatments_train_on_and_weight_what_they_claim():
    labels = labels_table(80)
    y = labels[CLASSES].to_numpy()
    n = len(y)
    is_pie = np.zeros(n, dtype=bool)
    is_pie[np.random.default_rng(0).choice(n, 9, replace=False)] = True
    base = training_set("baseline", is_pie, y, 3.0, seed=0)
    assert base.weights is None and np.array_equal(base.rows, np.arange(n))
    assert base.counts(is_pie) == {"n_train": n, "n_dropped": 0, "pies_kept": 9, "pies_dropped": 0,
                                   "n_upweighted": 0, "weight_sum": float(n)}
    remove = training_set("remove", is_pie, y, 3.0, seed=0)
    assert len(remove.rows) == n - 9 and not is_pie[remove.rows].any() and remove.weights is None
    assert remove.counts(is_pie)["pies_dropped"] == 9
    up = training_set("upweight", is_pie, y, 3.0, seed=0)
    assert np.array_equal(up.rows, np.arange(n))
    assert (up.weights[is_pie] == 3.0).all() and (up.weights[~is_pie] == 1.0).all()
    assert up.counts(is_pie)["n_upweighted"] == 9 and up.counts(is_pie)["weight_sum"] == n - 9 + 27
    control = training_set("remove_random", is_pie, y, 3.0, seed=0)
    dropped = np.setdiff1d(np.arange(n), control.rows)
    assert len(dropped) == 9 and not is_pie[dropped].any() and control.weights is None
    assert control.counts(is_pie) == {**base.counts(is_pie), "n_train": n - 9, "n_dropped": 9,
                                      "weight_sum": float(n - 9)}


def test_random_control_drops_exactly_as_many_images_matched_on_class():
    labels = labels_table(120, seed=5)
    y = labels[CLASSES].to_numpy()
    s = strata(y)
    is_pie = np.zeros(len(y), dtype=bool)
    for stratum, k in ((3, 2), (0, 3), (-1, 1)):  # 2 PIEs whose rarest class is D, 3 with A, 1 without findings
        is_pie[np.flatnonzero(s == stratum)[:k]] = True
    for seed in range(5):
        dropped = matched_random_drop(y, is_pie, seed)
        assert len(dropped) == is_pie.sum() == len(np.unique(dropped)) and not is_pie[dropped].any()
        np.testing.assert_array_equal(np.sort(s[dropped]), np.sort(s[is_pie]))  # class-matched
    assert not np.array_equal(matched_random_drop(y, is_pie, 0), matched_random_drop(y, is_pie, 1))
    np.testing.assert_array_equal(matched_random_drop(y, is_pie, 7), matched_random_drop(y, is_pie, 7))
    # a stratum with too few non-PIEs: its shortfall is drawn from the others, the count stays exact
    rare = np.flatnonzero(s == 3)
    is_pie2 = np.zeros(len(y), dtype=bool)
    is_pie2[rare[:-1]] = True  # all but one of the rare stratum are PIEs
    dropped = matched_random_drop(y, is_pie2, 0)
    assert len(dropped) == is_pie2.sum() and not is_pie2[dropped].any()
    assert (s[dropped] == 3).sum() == 1


# --- the training loop: row subset and per-image weights -----------------------------------------


def _tiny_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame(rng.integers(0, 2, size=(n, 2)).astype(np.int8), columns=["A", "B"])
    return labels, rng.integers(0, 256, size=(n, 32, 32), dtype=np.uint8)


def _weights(result) -> list[torch.Tensor]:
    return [t.detach().clone() for t in result.model.state_dict().values()]


def test_row_subset_and_unit_weights_train_exactly_the_plain_loop():
    cfg = TrainConfig(arch="resnet10", epochs=1, patience=1, batch_size=16, threads=1, device="cpu")
    labels, images = _tiny_data(40, 0)
    val_labels, val_images = _tiny_data(12, 1)
    rows = np.arange(0, 40, 2)
    plain = train_model(cfg, 0, labels.iloc[rows].reset_index(drop=True), images[rows], val_labels, val_images,
                        ["A", "B"])
    subset = train_model(cfg, 0, labels, images, val_labels, val_images, ["A", "B"], rows=rows,
                         sample_weights=np.ones(40))
    a, b = _weights(plain), _weights(subset)
    assert len(a) == len(b) > 0
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    heavy = train_model(cfg, 0, labels, images, val_labels, val_images, ["A", "B"], rows=rows,
                        sample_weights=np.where(np.arange(40) % 4 == 0, 3.0, 1.0))
    assert not all(torch.equal(x, y) for x, y in zip(a, _weights(heavy), strict=True))


# --- outcome -----------------------------------------------------------------------------------


def test_paired_difference_matches_scipy():
    a = pd.Series([0.50, 0.55, 0.52, 0.58], index=[0, 1, 2, 3])
    b = pd.Series([0.48, 0.50, 0.53, 0.51], index=[0, 1, 2, 3])
    got = outcome.paired(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert got["n"] == 4 and got["mean_diff"] == pytest.approx((a - b).mean())
    assert got["p"] == pytest.approx(ref.pvalue) and (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert outcome.paired(a.iloc[:1], b.iloc[:1])["p"] is None


def test_minimum_detectable_effect_is_found_with_80_percent_power_by_simulation():
    """The MDE's definition, brute force: 3-seed paired differences with true mean = the MDE
    and true SD = the observed SD of the differences; scipy's two-sided paired t-test at the
    study's alpha rejects in 80% of 20,000 samples (MC SE 0.0028), and the normal
    approximation's effect (half the MDE at 3 seeds) in far fewer."""
    a = pd.Series([0.50, 0.55, 0.52], index=[0, 1, 2])
    b = pd.Series([0.48, 0.50, 0.53], index=[0, 1, 2])
    got = outcome.paired(a, b)
    sd = float(np.std(a - b, ddof=1))
    assert got["sd_diff"] == pytest.approx(sd) and got["mde"] > 0
    rng = np.random.default_rng(12)
    reps = 20_000

    def rejection_rate(effect: float) -> float:
        base = rng.normal(0.5, 0.05, size=(reps, 3))  # each seed's baseline mAP
        treated = base + rng.normal(effect, sd, size=(reps, 3))  # paired differences ~ N(effect, sd)
        return float((stats.ttest_rel(treated, base, axis=1).pvalue <= outcome.ALPHA).mean())

    assert abs(rejection_rate(got["mde"]) - outcome.POWER) <= 4 * np.sqrt(0.8 * 0.2 / reps)
    assert abs(rejection_rate(-got["mde"]) - outcome.POWER) <= 4 * np.sqrt(0.8 * 0.2 / reps)  # two-sided
    normal = (stats.norm.isf(outcome.ALPHA / 2) + stats.norm.isf(1 - outcome.POWER)) * sd / np.sqrt(3)
    assert normal < 0.6 * got["mde"] and rejection_rate(normal) < 0.5
    assert outcome.paired(a.iloc[:1], b.iloc[:1])["mde"] is None


def test_each_comparison_states_what_its_seeds_could_detect():
    seeds = [0, 1, 2]
    rng = np.random.default_rng(3)

    def made(shift: float) -> outcome.TreatmentOutcome:
        by_seed = pd.DataFrame({k: 0.5 + shift + rng.normal(0, 0.01, 3) for k in outcome.QUANTITIES}, index=seeds)
        return outcome.TreatmentOutcome(by_seed, pd.DataFrame(), {}, pd.DataFrame(), np.zeros(1, bool))

    res = outcome.comparisons({"baseline": made(0.0), "remove": made(0.02)}, "baseline")["remove"]
    assert set(res) == {*outcome.QUANTITIES, "detectable"}
    sentence = res["detectable"]
    assert sentence.startswith("With 3 seeds, a difference smaller than ") and "could rarely be detected" in sentence
    for key, what in outcome.QUANTITIES.items():
        assert f"{res[key]['mde']:.3f} in {what}" in sentence
    assert json.loads(json.dumps(res)) == res
    one = {k: outcome.paired(pd.Series([0.5]), pd.Series([0.4])) for k in outcome.QUANTITIES}
    assert outcome.detectable(one) == ("With 1 seed, no difference could be detected: a paired t-test needs at "
                                       "least 2 seeds.")


def test_overlap_of_pie_sets():
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0], dtype=bool)
    assert outcome.overlap(a, b) == {"jaccard": 0.25, "baseline_kept": 0.5}


# --- the study's pipeline file ---------------------------------------------------------------


def test_study_stages_deps_are_their_import_closure_and_outputs_are_layout_paths():
    doc = yaml.safe_load(STUDY.read_text())
    out = Layout("synthetic")
    known = {out.pie_fold_predictions(0, 0), out.pie_train_scores, out.pie_train_json,
             out.pie_treatment_dir("baseline", 0), out.pie_treatment_json, out.pie_treatment_per_class,
             out.pie_treatment_figure, out.plot_table("pie_treatment_ap_change")}
    check_study_file(doc, known, {"fold": "0", "seed": "0", "treatment": "baseline"})
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert not [s for s in root if s.startswith("pie-")], "the study must not be in the default pipeline"


# --- end to end: dvc repro of the study in a temporary git repository -----------------------------

STUDY_FILE = "studies/pie-treatment/dvc.yaml"  # as the README types it
E2E_SEEDS = [0, 1]
# upweight's rows and weights: test_treatments_train_on_and_weight_what_they_claim above; end to end, the two
# controls it needs and the treatment that changes the training set suffice.
E2E_TREATMENTS = ["baseline", "remove", "remove_random"]


@pytest.fixture(scope="module")
def pie_study(tiny_study, tmp_path_factory):
    """The study in a copy of the shared tiny study (a clone with `studies/`, prepared data
    in place), run as the README says for many machines: `make repro-ray` with the study's
    pipeline file as target (waves: every pie-fold in parallel, pie-score, every pie-retrain
    in parallel, then pie-report), here on a local 2-CPU Ray runtime."""
    from workspaces import commit_all, copy_workspace, make

    ws = copy_workspace(tiny_study[0], tmp_path_factory.mktemp("pie") / "ws")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    # One epoch per fold model and retraining (ten trainings): what is checked end to end is which
    # models are trained on which rows and how their scores and tables are combined, not how well
    # they learn (the weighting itself: test_row_subset_and_unit_weights_train_exactly_the_plain_loop).
    params["pie_treatment"].update({"seeds": E2E_SEEDS, "treatments": E2E_TREATMENTS, "epochs": 1})
    params["analyze"]["pie_fraction"] = 0.1
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(ws, "study")
    out = make("repro-ray", ws, f"RAY_ARGS=--cpus 2 --progress lines --targets {STUDY_FILE}",
               extra_env={"RAY_USAGE_STATS_ENABLED": "0"}, drop_env=("OMP_NUM_THREADS",))
    return ws, out


@pytest.mark.slow
def test_dvc_repro_of_the_study_runs_its_stages_and_writes_its_outputs(pie_study):
    import mlflow
    from workspaces import env, run, stages_run

    ws, out = pie_study

    # the per-item stages ran on Ray, wave by wave; the plain ones with dvc repro between them
    info = json.loads((ws / RAY_LOG_DIR / "summary.json").read_text())
    states = {a.rsplit(":", 1)[-1]: s for a, s in info["stages"].items()}
    folds = [f"pie-fold@{f}-{s}" for f in (0, 1) for s in E2E_SEEDS]
    retrains = [f"pie-retrain@{t}-{s}" for t in E2E_TREATMENTS for s in E2E_SEEDS]
    assert {a: s["state"] for a, s in states.items()} == {a: "done" for a in folds + retrains}, out[-3000:]
    # pie-score wrote its table after the last fold model and before the first retraining
    scored = (ws / "metrics/synthetic/pie_train_scores.csv").stat().st_mtime
    assert max(states[a]["end"] for a in folds) < scored < min(states[a]["start"] for a in retrains)
    ran = stages_run(out)
    assert {r.rsplit(":", 1)[-1] for r in ran} == {"pie-score", "pie-report"}, ran
    # DVC's record is exact: nothing out of date, a plain dvc repro of the study is a no-op
    status = subprocess.run(["dvc", "status", "--json", STUDY_FILE], cwd=ws, env=env(), capture_output=True, text=True,
                            check=True)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    assert stages_run(run(["dvc", "repro", STUDY_FILE], ws)) == set()
    # plain `dvc repro` at the root never runs the study: the stages DVC plans for it (its
    # default target, the root dvc.yaml, and upstream) hold none of the study's. (A real
    # `dvc repro --dry` cannot show this here: it stops at prune, whose model was never trained.)
    plan = ("import json\nfrom dvc.repo import Repo\nfrom dvc.repo.reproduce import collect_stages, get_active_graph, "
            "plan_repro\nwith Repo('.') as repo:\n    steps = plan_repro(get_active_graph(repo.index.graph), "
            "collect_stages(repo, ['dvc.yaml']))\n    print(json.dumps([s.addressing for s in steps]))")
    proc = subprocess.run([sys.executable, "-c", plan], cwd=ws, capture_output=True, text=True, check=True)
    names = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert {"train@0", "analyze"} <= names and not [n for n in names if "pie-" in n], names
    train = pd.read_parquet(ws / "data/prepared/synthetic/labels_train.parquet")
    scores = pd.read_csv(ws / "metrics/synthetic/pie_train_scores.csv", dtype={"image_id": str, "patient_id": str})
    assert scores["image_id"].tolist() == train["image_id"].tolist()
    assert scores.groupby("patient_id")["fold"].nunique().max() == 1 and scores["spearman"].notna().all()
    # every training image scored exactly once, by the fold models that did not train on it
    fold_ids = [pd.read_parquet(ws / f"data/pie_treatment/synthetic/folds/fold-{f}/seed-0.parquet")
                .query("sparsity == 0")["image_id"].tolist() for f in (0, 1)]
    assert sorted(fold_ids[0] + fold_ids[1]) == sorted(train["image_id"])
    for f in (0, 1):
        assert set(fold_ids[f]) == set(scores.loc[scores["fold"] == f, "image_id"])
    n_pie = int(0.1 * len(train))
    assert int(scores["is_pie"].sum()) == n_pie
    train_json = json.loads((ws / "metrics/synthetic/pie_train.json").read_text())
    truth = train_json["truth"]["flipped"]
    hits = int((scores["is_pie"] & (scores["flipped"] > 0)).sum())
    assert truth["hits"] == hits and truth["precision"] == pytest.approx(hits / n_pie)
    for t in E2E_TREATMENTS:
        for s in E2E_SEEDS:
            counts = json.loads((ws / f"data/pie_treatment/synthetic/{t}/seed-{s}/train_set.json").read_text())
            assert counts["n_dropped"] == (n_pie if t in ("remove", "remove_random") else 0), (t, counts)
            assert counts["n_upweighted"] == (n_pie if t == "upweight" else 0)
    report = json.loads((ws / "metrics/synthetic/pie_treatment.json").read_text())
    assert set(report["treatments"]) == set(E2E_TREATMENTS)
    assert set(report["vs_baseline"]) == set(E2E_TREATMENTS) - {"baseline"}
    assert set(report["vs_remove_random"]) == set(E2E_TREATMENTS) - {"remove_random"}
    # one verdict per treatment over its family of tests, recomputed from the recorded comparisons
    refs = {ref: report[f"vs_{ref}"] for ref in verdict.REFERENCES}
    assert {t: v["verdict"] for t, v in report["verdicts"].items()} == {
        t: v["verdict"] for t, v in verdict.verdicts(refs, len(E2E_SEEDS), simulations=0).items()}
    assert set(report["verdicts"]) == set(E2E_TREATMENTS) - {"baseline"}
    per_class = pd.read_csv(ws / "metrics/synthetic/pie_treatment_per_class.csv")
    dense = per_class.loc[(per_class["treatment"] == "remove") & (per_class["level"] == 0)]
    assert report["treatments"]["remove"]["map_dense"] == pytest.approx(dense.groupby("seed")["ap"].mean().median())
    change = report["vs_baseline"]["remove"]["map"]
    base = per_class.loc[(per_class["treatment"] == "baseline") & (per_class["level"] == 0)]
    diff = dense.groupby("seed")["ap"].mean() - base.groupby("seed")["ap"].mean()
    assert change["mean_diff"] == pytest.approx(diff.mean()) and change["n"] == len(E2E_SEEDS)
    assert (ws / "plots/synthetic/pie_treatment.png").stat().st_size > 0
    shown = run(["dvc", "exp", "show", "--json"], ws)  # the venv's dvc, as every other command here
    assert "pie_treatment.json" in shown and "vs_remove_random" in shown
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("cxrprune")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.study = 'pie-treatment'")
    assert sorted(runs["tags.treatment"].dropna()) == sorted(t for t in E2E_TREATMENTS for _ in E2E_SEEDS)
    summary = runs.loc[runs["tags.cxrprune_stage"] == "pie-report"].iloc[0]
    assert summary["tags.verdict.remove"] == report["verdicts"]["remove"]["verdict"]


# --- the verdict over each treatment's family of tests -----------------------------------------


def _comparison(mean_diff: float, p: float | None, sd: float = 0.02, n: int = 3) -> dict:
    return {"n": n, "mean_diff": mean_diff, "p": p, "sd_diff": sd, "mde": 0.05 if p is not None else None}


def _family(remove: dict, control: dict) -> dict:
    """``{reference: {treatment: {quantity: comparison}}}`` for one treatment, ``remove``."""
    return {"baseline": {"remove": {"map": remove["map"], "rare_ap": remove["rare_ap"], "dap_top": _comparison(0, 0.5)}},
            "remove_random": {"remove": {"map": control["map"], "rare_ap": control["rare_ap"],
                                         "dap_top": _comparison(0, 0.5)}}}


def test_verdict_reads_the_whole_family_holm_adjusted():
    """The committed study's upweighting case: one raw p of 0.043 among four tests. Holm by
    hand: sorted p 0.043, 0.145, 0.191, 0.210 -> 4 x 0.043 = 0.171, then max(0.171, 3 x 0.145,
    2 x 0.191, 0.210) = 0.435 for the rest; nothing at 0.05, so no verdict, where "any test
    below 0.05" said "hurts"."""
    fam = _family({"map": _comparison(-0.044, 0.191), "rare_ap": _comparison(-0.013, 0.210)},
                  {"map": _comparison(-0.045, 0.043), "rare_ap": _comparison(-0.016, 0.145)})
    got = verdict.verdicts(fam, 3, simulations=0)["remove"]
    assert got["verdict"] == verdict.NO_CHANGE and got["left_out"] == []
    assert [t["p_holm"] for t in got["tests"]] == pytest.approx([0.435, 0.435, 0.172, 0.435])
    assert [(t["reference"], t["quantity"]) for t in got["tests"]] == [
        ("baseline", "map"), ("baseline", "rare_ap"), ("remove_random", "map"), ("remove_random", "rare_ap")]
    strong = _family({"map": _comparison(-0.1, 0.001), "rare_ap": _comparison(-0.01, 0.4)},
                     {"map": _comparison(-0.1, 0.002), "rare_ap": _comparison(0.01, 0.6)})
    assert verdict.verdicts(strong, 3, simulations=0)["remove"]["verdict"] == verdict.HURTS
    helps = _family({"map": _comparison(0.1, 0.001), "rare_ap": _comparison(0.01, 0.4)},
                    {"map": _comparison(0.05, 0.3), "rare_ap": _comparison(0.01, 0.6)})
    assert verdict.verdicts(helps, 3, simulations=0)["remove"]["verdict"] == verdict.HELPS
    mixed = _family({"map": _comparison(0.1, 0.001), "rare_ap": _comparison(-0.05, 0.002)},
                    {"map": _comparison(0.05, 0.3), "rare_ap": _comparison(0.01, 0.6)})
    assert verdict.verdicts(mixed, 3, simulations=0)["remove"]["verdict"] == verdict.MIXED
    # one seed: nothing could be tested, which is not "no change"
    one = _family({"map": _comparison(-0.1, None, n=1), "rare_ap": _comparison(0.0, None, n=1)},
                  {"map": _comparison(-0.1, None, n=1), "rare_ap": _comparison(0.0, None, n=1)})
    got = verdict.verdicts(one, 1)["remove"]
    assert got["verdict"] == verdict.UNTESTED and len(got["left_out"]) == 4
    assert got["calibration"]["false_positive_rate"] is None
    assert json.loads(json.dumps(got)) == got


def test_verdict_error_rates_by_simulation_through_the_study_code():
    """Planted nulls and losses at 3 seeds. Through the study's own code (outcome.comparisons,
    then verdicts), 300 studies where no treatment changes anything: the rule says 'helps' or
    'hurts' at most 5% of the time (3 MC standard errors of slack), and error_rates, the
    vectorised simulation the stage records, agrees within MC error. The unadjusted rule (any
    of the four tests at p <= 0.05) is measured above 12%: the inflation the Holm step removes.
    Three seeds have little power: a dense-mAP loss of 9 SDs of the paired differences is
    called 'hurts' at least 90% of the time (error_rates: about 97%; a 3-SD loss about half)."""
    rng = np.random.default_rng(5)
    seeds = [0, 1, 2]

    def arm(shift: float, common: np.ndarray) -> outcome.TreatmentOutcome:
        by_seed = pd.DataFrame({k: common + shift * (k == "map") + rng.normal(0, 0.02, 3) for k in outcome.QUANTITIES},
                               index=seeds)
        return outcome.TreatmentOutcome(by_seed, pd.DataFrame(), {}, pd.DataFrame(), np.zeros(1, bool))

    def study(shift: float) -> str:
        common = rng.normal(0.5, 0.05, 3)  # each seed's shared level: cancels in the pairing
        res = {"baseline": arm(0.0, common), "remove": arm(shift, common), "remove_random": arm(0.0, common)}
        by = {ref: outcome.comparisons(res, ref) for ref in ("baseline", "remove_random")}
        return verdict.verdicts(by, 3, simulations=0)["remove"]["verdict"]

    reps = 300
    null = [study(0.0) for _ in range(reps)]
    fpr = np.mean([v != verdict.NO_CHANGE for v in null])
    assert fpr <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps), fpr
    sd = {k: 0.02 * np.sqrt(2) for k in verdict.QUANTITIES}
    rates = verdict.error_rates(sd, 3, simulations=20_000, seed=1)
    simulated = 1 - rates[verdict.NO_CHANGE]
    assert simulated <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 20_000), rates
    assert abs(simulated - fpr) <= 3 * np.sqrt(0.05 * 0.95 / reps)
    assert 1 - verdict.error_rates(sd, 3, holm=False, simulations=20_000, seed=1)[verdict.NO_CHANGE] > 0.12
    loss = [study(-9 * 0.02 * np.sqrt(2)) for _ in range(50)]
    assert np.mean([v == verdict.HURTS for v in loss]) >= 0.9


def test_per_class_table_names_the_compression_amount_level():
    """pie_treatment_per_class.csv: the evaluate stage's per-class rows of each treated model's
    L1 blocks, its level column named ``level`` like every metrics table (issue 21)."""
    from test_evaluate import CLASSES, make_labels, make_predictions
    labels = make_labels()
    tables = {("baseline", 0): make_predictions(labels), ("remove", 0): make_predictions(labels, seed=1)}
    table = outcome.per_class_table(tables, labels, CLASSES, 0.5)
    assert list(table.columns) == ["treatment", "seed", "level", "class_name", "ap", "auroc", "f1"]
    assert sorted(table["level"].unique()) == [0.0, 0.5, 0.9] and len(table) == 2 * 3 * len(CLASSES)
