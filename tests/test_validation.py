"""``cxrprune validate``: planted-effect replicates through the evaluate/analyze/report code path.

The replicate run (30 null replicates and 10 at the largest effect, no intervals) takes about
a minute on 2 cores; every other test here takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cxrprune.analysis import evaluate, findings, pies
from cxrprune.compression import predictions
from cxrprune.core.config import load_params
from cxrprune.core.errors import ConfigError
from cxrprune.validation import harness, report, truth
from cxrprune.validation.effects import check_effect
from cxrprune.validation.generator import TRUTH_COLUMNS, Design, generate

ROOT = Path(__file__).resolve().parents[1]
NULL_REPLICATES = 30
POWER_REPLICATES = 10
@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def config(params) -> harness.Config:
    return harness.Config(Design(), params.evaluate, params.analyze, tuple(params.prune.levels), len(params.seeds))


@pytest.fixture(scope="module")
def outcomes(config) -> list[harness.Outcome]:
    """30 replicates at e = 0 and 10 at e = 1, in 2 worker processes (one spawn for both)."""
    tasks = [(0.0, r) for r in range(NULL_REPLICATES)] + [(1.0, r) for r in range(POWER_REPLICATES)]
    return harness.run_many(config, 1, tasks, workers=2)


def max_false_positives(n: int, rate: float = 0.05, tail: float = 0.001) -> int:
    """The largest count of false positives among ``n`` replicates that a true rate of ``rate``
    gives with probability above ``tail``: more means the rate is really inflated."""
    return int(stats.binom.isf(tail, n, rate))


@pytest.mark.slow
@pytest.mark.parametrize("key", [c.key for c in findings.CLAIMS if c.key in harness.KEYS and c.direction != 0])
def test_null_false_positive_rate_is_bounded(outcomes, key):
    null = [o for o in outcomes if o.effect == 0.0]
    hits = sum(o.verdicts[key] == findings.REPRODUCED for o in null)
    bound = max_false_positives(len(null))
    assert hits <= bound, f"{key}: 'reproduced' in {hits} of {len(null)} null replicates (at most {bound} at 5%)"


@pytest.mark.slow
@pytest.mark.parametrize("key", ["rare_forgotten_earlier", "fcd_frequency", "pie_3plus", "pie_label_noise",
                                 "pie_low_quality"])
def test_power_at_the_largest_effect(outcomes, key):
    planted = [o for o in outcomes if o.effect == 1.0]
    hits = sum(o.verdicts[key] == findings.REPRODUCED for o in planted)
    assert hits >= 7, f"{key}: 'reproduced' in only {hits} of {len(planted)} replicates at e = 1"


@pytest.mark.slow
def test_outcomes_do_not_depend_on_the_worker_count(outcomes, config):
    again = harness.run_replicate(config, 1, 0.0, 3)
    first = next(o for o in outcomes if o.effect == 0.0 and o.replicate == 3)
    assert again.verdicts == first.verdicts and again.values == first.values


@pytest.fixture(scope="module")
def replicate(params):
    small = Design(n_patients=400)
    return generate(small, 0.5, params.prune.levels, len(params.seeds), params.analyze.pie_sparsity,
                    np.random.default_rng(0))


def test_generated_tables_pass_the_pipelines_checks(replicate, params):
    rep = replicate
    ids = rep.test_labels["image_id"].tolist()
    for seed, table in zip(rep.seeds, rep.tables):
        predictions.check_predictions(table, f"seed {seed}", ids, rep.classes, ["l1"], params.prune.levels)
        evaluate.per_class_metrics(table, rep.test_labels, rep.classes, seed)  # raises on anything it refuses
    assert list(rep.truth.columns) == TRUTH_COLUMNS
    aligned = pies.align_truth(rep.truth, ids)
    assert aligned["image_id"].tolist() == ids
    assert set(rep.test_labels["patient_id"]).isdisjoint(rep.train_labels["patient_id"])
    y = rep.test_labels[rep.classes].to_numpy()
    assert (y.sum(axis=0) > 0).all() and (y.sum(axis=0) < len(y)).all()
    flipped = rep.truth["flipped"].to_numpy() == 1
    assert ((y != rep.true_labels).any(axis=1) == flipped).all()  # a flag exactly where a label differs


def test_null_plants_nothing(params):
    rep = generate(Design(n_patients=300), 0.0, params.prune.levels, 2, params.analyze.pie_sparsity,
                   np.random.default_rng(1))
    assert not rep.planted.any()  # PIE-ness independent of every image property


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "1"])
def test_effect_outside_the_range_is_refused(bad):
    with pytest.raises(ConfigError, match="--effects"):
        check_effect(bad, "--effects")


@pytest.mark.parametrize("args, option", [(["--replicates", "5"], "--replicates"), (["--effects", "9"], "--effects")])
def test_cli_refuses_bad_options_with_one_line(args, option):
    proc = subprocess.run([sys.executable, "-m", "cxrprune", "validate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxrprune: error:") and option in lines[0], proc.stderr


def test_population_ap_limits():
    same = truth.population_ap(0.1, np.array([1.0]), np.array([1.0]), np.zeros(1), np.ones(1))
    apart = truth.population_ap(0.1, np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.array([0.0, 50.0]), np.ones(2))
    assert same == pytest.approx(0.1, abs=1e-3) and apart == pytest.approx(1.0, abs=1e-3)


def test_report_rates_and_files(tmp_path, config):
    def outcome(effect, r, verdict, ci, target):
        keys = harness.KEYS
        return harness.Outcome(effect, r, {k: verdict for k in keys}, {k: 0.5 for k in keys},
                               {k: ci for k in keys}, {k: target for k in keys}, 1.0)

    rows = [outcome(0.0, r, findings.REPRODUCED if r < 2 else findings.NOT_REPRODUCED, [0.0, 1.0], 0.5)
            for r in range(20)] + [outcome(1.0, r, findings.REPRODUCED, [0.0, 0.1], 0.5) for r in range(20)]
    doc = report.document(config, rows, [0.0, 1.0], replicates=20, seed=0, workers=1, command="cxrprune validate",
                          wall_seconds=1.0)
    f = doc["findings"]["pie_3plus"]["by_effect"]
    assert f["0"]["reproduced"]["rate"] == 0.1 and f["0"]["reproduced"]["ci"][0] < 0.1 < f["0"]["reproduced"]["ci"][1]
    assert f["0"]["coverage"]["rate"] == 1.0 and f["1"]["coverage"]["rate"] == 0.0
    json_path, txt_path = report.write(tmp_path / "verdicts", doc)
    assert json.loads(json_path.read_text())["footer"]["command"] == "cxrprune validate"
    assert "command: cxrprune validate" in txt_path.read_text()
