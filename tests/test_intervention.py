"""The frequency intervention study (issue 20): arms, masking, the sign-flip test, outcome.

Oracles: hand-made label tables and counts, the training loop itself (a hidden positive's
label does not change one weight of the trained model; unmasked, it does), scipy
(``permutation_test`` with sign flips and the t interval of ``ttest_1samp``), simulation of
planted nulls and shifts, and a real ``dvc repro`` of the study on the tiny generated data.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats
from stage_deps import check_study_file

from cxrprune.core.config import InterventionConfig, TrainConfig
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.core.layout import Layout
from cxrprune.intervention import arms, outcome
from cxrprune.stats.signflip import EXACT_MAX, sign_flip_test
from cxrprune.training.loop import train_model

REPO = Path(__file__).resolve().parents[1]
STUDY_FILE = "studies/frequency-intervention/dvc.yaml"  # as the README types it
CLASSES = ["A", "B", "C", "D", "E"]


def labels_table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < [0.5, 0.3, 0.2, 0.1, 0.08]).astype(np.int8)
    return pd.DataFrame({"image_id": [f"{i:05d}.png" for i in range(n)], **dict(zip(CLASSES, y.T))})


# --- arms ----------------------------------------------------------------------------------


def test_halves_split_the_classes_at_random_and_each_arm_makes_one_half_rare():
    half = arms.halves(CLASSES, 0)
    assert sorted(half.values()).count("A") == 3 and set(half) == set(CLASSES)
    assert half == arms.halves(CLASSES, 0)
    assert any(arms.halves(CLASSES, s) != half for s in range(1, 6))  # the seed draws the split
    assert arms.rare_classes("rare_a", half) + arms.rare_classes("rare_b", half) == [c for c in CLASSES
                                                                                      if half[c] == "A"] + [
        c for c in CLASSES if half[c] == "B"]
    assert arms.rare_classes("control", half) == []
    with pytest.raises(ConfigError, match="--arm rare_c is not one of the intervention arms"):
        arms.rare_classes("rare_c", half)


def test_loss_weights_hide_exactly_the_chosen_positives_and_nothing_else():
    labels = labels_table()
    y = labels[CLASSES].to_numpy()
    rare = ["B", "E"]
    w = arms.loss_weights(labels, CLASSES, rare, 0.125, seed=3)
    assert w.shape == y.shape and w.dtype == np.float32 and set(np.unique(w)) <= {0.0, 1.0}
    hidden = w == 0
    assert not (hidden & (y == 0)).any(), "a negative was hidden"
    for j, c in enumerate(CLASSES):
        p = int(y[:, j].sum())
        seen = int(((y[:, j] > 0) & ~hidden[:, j]).sum())
        assert seen == (int(np.ceil(0.125 * p)) if c in rare else p), c
    assert arms.seen_positives(labels, CLASSES, w).to_dict() == {
        c: int(((y[:, j] > 0) & ~hidden[:, j]).sum()) for j, c in enumerate(CLASSES)}
    # a class keeps the same positives whichever arm hides it, and whatever else is rare with it
    alone = arms.loss_weights(labels, CLASSES, ["E"], 0.125, seed=3)
    assert np.array_equal(alone[:, 4], w[:, 4])
    assert (arms.loss_weights(labels, CLASSES, [], 0.125, seed=3) == 1).all()


def test_a_class_without_training_positives_is_one_error_naming_it():
    labels = labels_table()
    labels["D"] = 0
    with pytest.raises(DataError, match=r"class\(es\) D have no training positive.*intervention.keep 0.125"):
        arms.loss_weights(labels, CLASSES, ["A"], 0.125, seed=0)


@pytest.mark.parametrize(("key", "value"), [("keep", 0.0), ("keep", 1.0), ("seeds", []), ("assign_seed", -1),
                                            ("epochs", -1)])
def test_bad_intervention_params_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"intervention.{key}"):
        InterventionConfig(**{key: value})


def test_a_hidden_positive_does_not_change_one_weight_of_the_trained_model():
    """The loss contributions, checked through the training loop: relabelling every hidden
    positive as a negative trains bit-identical weights when the labels are masked (weight 0),
    and different ones without the mask."""
    rng = np.random.default_rng(1)
    labels = labels_table(64, 2)
    images = rng.integers(0, 256, size=(64, 32, 32), dtype=np.uint8)
    w = arms.loss_weights(labels, CLASSES, ["A", "C"], 0.25, seed=0)
    flipped = labels.copy()
    flipped[CLASSES] = np.where(w == 0, 0, labels[CLASSES].to_numpy())
    cfg = TrainConfig(arch="resnet10", epochs=1, batch_size=32, threads=1, patience=1, device="cpu")

    def weights(table: pd.DataFrame, mask: np.ndarray | None) -> dict:
        return train_model(cfg, 0, table, images, labels, images, CLASSES, sample_weights=mask).model.state_dict()

    masked, masked_flipped = weights(labels, w), weights(flipped, w)
    assert all(torch.equal(masked[k], masked_flipped[k]) for k in masked)
    plain, plain_flipped = weights(labels, None), weights(flipped, None)
    assert not all(torch.equal(plain[k], plain_flipped[k]) for k in plain)
    with pytest.raises(Exception, match=r"sample_weights has shape \(64, 4\)"):
        weights(labels, w[:, :4])


# --- the sign-flip test --------------------------------------------------------------------


@pytest.mark.parametrize("n", [6, EXACT_MAX, 20])
def test_sign_flip_test_matches_scipy(n):
    d = np.random.default_rng(n).normal(0.1, 0.3, n)
    got = sign_flip_test(d, draws=20_000, seed=0)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=20_000 if n > EXACT_MAX
                                 else np.inf, alternative="two-sided", random_state=0)
    assert got.exact == (n <= EXACT_MAX) and got.n == n and got.mean == pytest.approx(d.mean())
    if got.exact:
        assert got.p == pytest.approx(ref.pvalue)
    else:  # two Monte Carlo estimates of one p: within 4 standard errors
        assert abs(got.p - ref.pvalue) <= 4 * np.sqrt(ref.pvalue * (1 - ref.pvalue) / 20_000) + 1e-4
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high))
    assert sign_flip_test([0.3, np.nan]).p is None and sign_flip_test([0.3, np.nan]).n == 1


def test_sign_flip_test_holds_its_level_on_skewed_symmetric_noise_and_finds_a_shift():
    """Planted nulls: 20 classes, each with its own spread and heavy-tailed noise (t with 2
    df), 1000 replicates: rejections at most 5% + 3 MC standard errors. Planted shifts: with
    noise this heavy (t with 2 df has no finite variance; spreads 0.02-0.3), a shift of 0.35 is
    found at least 80% of the time (measured: 0.53 at 0.15, 0.90 at 0.35)."""
    rng = np.random.default_rng(7)
    spread = rng.uniform(0.02, 0.3, 20)
    null = [sign_flip_test(spread * rng.standard_t(2, 20), draws=999, seed=i).p <= 0.05 for i in range(1000)]
    assert np.mean(null) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)
    shifted = [sign_flip_test(spread * rng.standard_t(2, 20) - 0.35, draws=999, seed=i).p <= 0.05
               for i in range(200)]
    assert np.mean(shifted) >= 0.8


# --- outcome -------------------------------------------------------------------------------


def _summary(retained: dict[str, float], dense: float = 0.8, lo: float = 0.7) -> pd.DataFrame:
    return pd.DataFrame({"dense_auroc": dense, "dense_auroc_lo": lo, "dense_auroc_hi": 0.9,
                         "retained": pd.Series(retained), "first_drop": 0.5}, index=pd.Index(list(retained),
                                                                                              name="class_name"))


def _table(rare_shift: float, noise: float = 0.02, n: int = 12, seed: int = 0, unlearned: str | None = None
           ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    classes = [f"c{i}" for i in range(n)]
    half = {c: "A" if i < n // 2 else "B" for i, c in enumerate(classes)}
    base = dict(zip(classes, rng.uniform(0.4, 0.8, n)))
    rare = {c: base[c] + rare_shift + rng.normal(0, noise) for c in classes}
    common = {c: base[c] + rng.normal(0, noise) for c in classes}
    control = {c: base[c] + rng.normal(0, noise) for c in classes}
    a = {c: (rare if half[c] == "A" else common)[c] for c in classes}
    b = {c: (rare if half[c] == "B" else common)[c] for c in classes}
    summaries = {"rare_a": _summary(a), "rare_b": _summary(b), "control": _summary(control)}
    if unlearned:  # not learned where it is rare
        arm = "rare_a" if half[unlearned] == "A" else "rare_b"
        summaries[arm].loc[unlearned, ["dense_auroc", "dense_auroc_lo"]] = (0.55, 0.45)
    ones = pd.Series(10, index=classes)
    return outcome.per_class_table(summaries, half, {a: ones for a in arms.ARMS}, ones * 8, ones)


def test_the_verdict_follows_the_within_class_contrast_and_lists_every_class_left_out():
    planted = outcome.contrasts(_table(-0.1, unlearned="c3"), draws=2000)
    assert planted["verdict"] == outcome.FORGOTTEN_MORE and planted["frequency"]["n"] == 11
    assert planted["left_out"] == [{"class": "c3", "reason": "not learned in its rare arm rare_a: dense AUROC CI "
                                                             "includes 0.5"}]
    assert planted["frequency"]["mean"] == pytest.approx(-0.1, abs=0.03)
    assert planted["masking_control"]["p"] > 0.01  # nothing planted between the common arm and the control
    assert outcome.contrasts(_table(0.1), draws=2000)["verdict"] == outcome.FORGOTTEN_LESS
    assert json.loads(json.dumps(planted)) == planted
    one = _table(-0.1, n=2).iloc[:1]
    assert outcome.contrasts(one)["verdict"] == outcome.UNTESTED


def test_verdict_false_positive_rate_and_power_on_planted_effects():
    """200 null tables (no effect of rarity): "rare forgotten more" at most 2.5% + 3 MC SEs
    (one side of a two-sided 5% test); the calibration the stage records agrees, and its
    power grows with the planted loss."""
    calls = [outcome.contrasts(_table(0.0, seed=s), draws=999)["verdict"] for s in range(200)]
    assert np.mean([v == outcome.FORGOTTEN_MORE for v in calls]) <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / 200)
    noise = _table(0.0, n=20)["d_control"]
    cal = outcome.calibration(noise, (0.01, 0.05), replicates=200, draws=499)
    assert cal["false_positive_rate"] <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / 200)
    assert cal["power"]["0.01"] < cal["power"]["0.05"] and cal["power"]["0.05"] >= 0.9


# --- the study's pipeline file -------------------------------------------------------------


def test_study_stages_deps_are_their_import_closure_and_outputs_are_layout_paths():
    doc = yaml.safe_load((REPO / STUDY_FILE).read_text())
    out = Layout("synthetic")
    known = {out.intervention_dir("rare_a", 0), out.intervention_json, out.intervention_per_class,
             out.intervention_figure}
    check_study_file(doc, known, {"seed": "0", "arm": "rare_a"})
    assert doc["stages"]["intervention-train"]["matrix"]["arm"] == list(arms.ARMS)
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert not [s for s in root if s.startswith("intervention-")], "the study must not be in the default pipeline"


# --- end to end: dvc repro of the study in a copy of the tiny study -----------------------------


@pytest.mark.slow
def test_dvc_repro_of_the_study_writes_its_verdict_and_lists_what_it_left_out(tiny_study, tmp_path_factory):
    import mlflow
    from workspaces import commit_all, copy_workspace, env, run, stages_run

    ws = copy_workspace(tiny_study[0], tmp_path_factory.mktemp("intervention") / "ws")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    # One epoch per arm: the checks are what each arm hid, the table and the verdict's bookkeeping,
    # not the size of the effect (that: the planted-effect simulations above).
    params["intervention"].update({"seeds": [0], "keep": 0.5, "epochs": 1})
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(ws, "study")
    bad = subprocess.run(["cxrprune", "intervention-train", "--arm", "rare_c", "--seed", "0"], cwd=ws, env=env(),
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "cxrprune: error: --arm rare_c is not one of the intervention arms rare_a, rare_b, control"], bad.stderr
    out = run(["dvc", "repro", STUDY_FILE], ws)
    ran = {r.rsplit(":", 1)[-1] for r in stages_run(out)}
    assert ran == {f"intervention-train@{a}-0" for a in arms.ARMS} | {"intervention-report"}, out[-2000:]
    status = subprocess.run(["dvc", "status", "--json", STUDY_FILE], cwd=ws, env=env(), capture_output=True,
                            text=True, check=True)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    report = json.loads((ws / "metrics/synthetic/frequency_intervention.json").read_text())
    table = pd.read_csv(ws / "metrics/synthetic/frequency_intervention_per_class.csv", keep_default_na=False)
    classes = json.loads((ws / "data/prepared/synthetic/meta.json").read_text())["classes"]
    assert sorted(table["class_name"]) == sorted(classes)
    assert report["verdict"] in (outcome.FORGOTTEN_MORE, outcome.FORGOTTEN_LESS, outcome.NO_EFFECT,
                                 outcome.UNTESTED)
    # every class is either in the contrast or listed with its reason
    left = {d["class"] for d in report["left_out"]}
    assert report["frequency"]["n"] + len(left) == len(classes)
    assert left == set(table.loc[table["excluded"] != "", "class_name"])
    # each arm hid what its train_set.json says, only for its rare half
    train = pd.read_parquet(ws / "data/prepared/synthetic/labels_train.parquet")
    for arm in arms.ARMS:
        record = json.loads((ws / f"data/intervention/synthetic/{arm}/seed-0/train_set.json").read_text())
        assert record["rare_classes"] == report["arms"][arm]
        for c in classes:
            p = int(train[c].sum())
            assert record["seen_positives"][c] == (int(np.ceil(0.5 * p)) if c in record["rare_classes"] else p)
    assert (ws / "plots/synthetic/frequency_intervention.png").stat().st_size > 0
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("cxrprune")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.study = 'frequency-intervention'")
    assert sorted(runs["tags.arm"].dropna()) == sorted(arms.ARMS)
    assert (runs["tags.verdict"].dropna() == report["verdict"]).all() and runs["tags.verdict"].notna().sum() == 1
