"""``cxrprune repro --ray``: per-seed stages as Ray tasks, recorded by DVC as if ``dvc repro`` ran.

Fast tests cover the planning, the resources each task asks for, the MLflow links, output
clean-up and the command line. The slow ones run the tiny study of test_pipeline:

- a local Ray runtime with 2 CPUs runs the two seeds in parallel; ``dvc.lock`` and the
  outputs equal those of a plain sequential ``dvc repro`` in a twin workspace;
- the MLflow runs of the Ray tasks.

A cluster, Ctrl-C and DVC-remote mode: test_scaleout_cluster.py (another file, so that
another test process runs them while this one builds the twin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray_runs import LOGS, dvc_status, hashes, lock, needs_ray, repro_ray, summary
from workspaces import N_BLOCKS, SEEDS, clone_repo, make, make_workspace, run, stages_run

from cxrprune.cli import build_parser
from cxrprune.scaleout import common, plan, progress, resources, worker


# ----------------------------------------------------------------------------- helpers


def zip_members(path: Path) -> dict:
    """A torch checkpoint's records without the archive's root folder, which torch names
    after the file it first wrote (the atomic writer's random temporary name)."""
    with zipfile.ZipFile(path) as z:
        return {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}


# ------------------------------------------------------------------------- fast tests


def test_task_resources_share_cpus_or_take_one_gpu_each():
    cpu_nodes = [{"CPU": 2.0}]
    assert resources.task_resources(cpu_nodes, n_parallel=2).num_cpus == 1
    assert resources.task_resources(cpu_nodes, n_parallel=5).num_cpus == 1
    one = resources.task_resources(cpu_nodes, n_parallel=1)
    assert (one.num_cpus, one.threads, one.num_gpus) == (2, 2, 0)
    # 2 x 16 CPUs, 4 seeds: 8 CPUs each, but never more than one node has
    assert resources.task_resources([{"CPU": 16.0}, {"CPU": 16.0}], 4).num_cpus == 8
    assert resources.task_resources([{"CPU": 4.0}, {"CPU": 4.0}], 1).num_cpus == 4
    # GPUs: one each, with the CPUs the scarcest GPU node has per GPU; a CPU-only head does not count
    gpu = resources.task_resources([{"CPU": 64.0}, {"CPU": 32.0, "GPU": 8.0}, {"CPU": 12.0, "GPU": 4.0}], 30)
    assert (gpu.num_gpus, gpu.num_cpus, gpu.threads) == (1, 3, 3)
    assert resources.task_resources([{"CPU": 8.0, "GPU": 2.0}], 4, num_gpus=0).num_gpus == 0
    # custom resources narrow the nodes considered
    custom = resources.task_resources([{"CPU": 8.0, "head": 1.0}, {"CPU": 2.0, "worker_node": 1.0}], 2,
                                     custom={"worker_node": 0.5})
    assert (custom.num_cpus, custom.resources) == (1, {"worker_node": 0.5})
    assert resources.task_resources(cpu_nodes, 2, num_cpus=2).threads == 2


def test_mlflow_links():
    run = {"run_id": "abc", "experiment_id": "7", "tracking_uri": "http://mlflow.lab:5000/"}
    assert progress.mlflow_link(run) == "http://mlflow.lab:5000/#/experiments/7/runs/abc"
    local = {**run, "tracking_uri": "sqlite:////work/mlflow.db"}
    assert progress.mlflow_link(local) == "http://127.0.0.1:5000/#/experiments/7/runs/abc"


def test_run_links_read_the_train_stages_run_record(tmp_path):
    """The driver links to the run named in ``run.json`` as the train stage wrote it (one
    reader, :mod:`cxrprune.tracking.run_record`); a damaged or partial record gives no link."""
    from cxrprune.tracking.run_record import write_run_record

    spec = plan.StageSpec("train@0", [], ".", [plan.OutSpec("models/seed-0")], [], [])
    folder = tmp_path / "models" / "seed-0"
    folder.mkdir(parents=True)
    assert progress.find_run_link(tmp_path, spec) is None
    write_run_record(folder / "run.json", "abc", "7", "http://mlflow.lab:5000")
    assert progress.find_run_link(tmp_path, spec) == "http://mlflow.lab:5000/#/experiments/7/runs/abc"
    for damaged in ("{", "[1, 2]", '{"run_id": "abc"}'):
        (folder / "run.json").write_text(damaged)
        assert progress.find_run_link(tmp_path, spec) is None, damaged


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_simple_stage_command_replaces_its_shell(shell, tmp_path, monkeypatch):
    """The death signal a stage gets from its Ray worker must reach the stage process itself:
    a shell that forks the command (dash does) would leave it orphaned and training on."""
    if not Path(shell).exists():
        pytest.skip(f"{shell} not installed")
    monkeypatch.setenv("SHELL", shell)
    out = tmp_path / "pid"
    argv = worker._shell_cmd(f"{sys.executable} -c 'import os; open(\"{out}\", \"w\").write(str(os.getppid()))'")
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(out.read_text()) == os.getpid()  # its parent is us, not a shell in between
    assert worker._exec_form("cxrprune train --seed 0") == "exec cxrprune train --seed 0"
    for compound in ("a && b", "a;b", "a | b", "X=1 a", "a > log", "cd x", "a \"b", "a\nb", "(a)"):
        assert worker._exec_form(compound) == compound
    failing = subprocess.run(worker._shell_cmd(f"{sys.executable} -c 'raise SystemExit(3)'"))
    assert failing.returncode == 3


def test_parse_resources_and_cli():
    assert resources.parse_resources('{"worker_node": 0.5}') == {"worker_node": 0.5}
    for bad in ("worker_node", '{"a": 0}', '["a"]', '{"a": true}'):
        with pytest.raises(common.ScaleoutError):
            resources.parse_resources(bad)
    parser = build_parser()
    args = parser.parse_args(["repro", "--ray"])
    assert args.ray == "local" and args.targets is None and args.max_parallel is None
    args = parser.parse_args(["repro", "--ray", "10.0.0.1:6379", "--targets", "prune", "evaluate",
                              "--max-parallel", "4", "--remote", "store"])
    assert (args.ray, args.targets, args.max_parallel, args.remote) == ("10.0.0.1:6379", ["prune", "evaluate"], 4,
                                                                        "store")
    assert parser.parse_args(["repro"]).ray is None


def test_remove_outputs_takes_partial_writes_and_keeps_persistent(tmp_path):
    d = tmp_path / "data/models/x"
    (d / "seed-0").mkdir(parents=True)
    (d / "seed-0/model.pt").write_bytes(b"half")
    (d / ".seed-0.old").mkdir()
    (tmp_path / "p").mkdir()
    (tmp_path / "p/seed-0.parquet").write_bytes(b"x")
    (tmp_path / "p/.seed-0.parquet.ab12.parquet").write_bytes(b"partial")
    (tmp_path / "p/seed-1.parquet").write_bytes(b"other seed")
    (tmp_path / "keep.csv").write_text("persist")
    plan.remove_outputs(tmp_path, [plan.OutSpec("data/models/x/seed-0"), plan.OutSpec("p/seed-0.parquet"),
                                       plan.OutSpec("keep.csv", persist=True), plan.OutSpec("missing/y")])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep.csv", "seed-1.parquet"]


def test_plan_groups_each_seeds_chain_after_the_upstream_stages(tmp_path):
    ws = make_workspace(tmp_path)
    p = plan.make_plan(ws)
    assert p.upstream == ["generate", "prepare"]
    assert [(g.label, g.stages) for g in p.groups] == [(str(s), [f"train@{s}", f"prune@{s}"]) for s in SEEDS]
    prune = p.stages["prune@1"]
    assert prune.cmds == ["cxrprune prune --seed 1"] and prune.group_deps == ["train@1"]
    assert prune.producers == ["prepare", "train@1"]
    assert sorted(o.path for o in prune.outs) == ["data/predictions/synthetic/efficiency-seed-1.csv",
                                                  "data/predictions/synthetic/seed-1.parquet"]
    only = plan.make_plan(ws, ["prune@1"])
    assert [g.stages for g in only.groups] == [["train@1", "prune@1"]] and only.upstream == ["generate", "prepare"]
    assert plan.make_plan(ws, ["prepare"]).groups == []
    assert len(p.waves) == 1 and not [a for a in p.stages if "pie-" in a]  # the opt-in study: not without a target


def test_a_study_file_runs_in_waves_split_at_its_plain_stages(tmp_path):
    """studies/pie-treatment/dvc.yaml: pie-fold@* -> pie-score -> pie-retrain@* -> pie-report."""
    ws = make_workspace(tmp_path)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    study = "studies/pie-treatment/dvc.yaml"
    p = plan.make_plan(ws, [study])
    folds = [f"{study}:pie-fold@{f}-{s}" for f in params["pie_treatment"]["folds"] for s in params["pie_treatment"]["seeds"]]
    assert [w.before for w in p.waves] == [["generate", "prepare"], [f"{study}:pie-score"]]
    first, second = ([a for g in w.groups for a in g.stages] for w in p.waves)
    assert first and all(a.startswith(f"{study}:pie-fold@") for a in first)
    assert all(len(g.stages) == 1 for w in p.waves for g in w.groups)  # every model its own task
    assert sorted(second) == sorted(f"{study}:pie-retrain@{t}-{s}" for t in params["pie_treatment"]["treatments"]
                                    for s in params["pie_treatment"]["seeds"])
    assert sorted(first) == sorted(folds)
    assert p.upstream == ["generate", "prepare"] and p.upstream_of(p.waves[1]) == [
        "generate", "prepare", f"{study}:pie-score"]
    assert f"{study}:pie-report" not in p.stages  # the rest: dvc repro after the last wave


# ------------------------------------------------------------------------- slow tests


@pytest.fixture(scope="module")
def twins(tiny_study, tmp_path_factory):
    """The tiny study reproduced in two clones of the repository (both with train.threads 1):
    `make repro` (the shared tiny study) and `make repro-ray` (`cxrprune repro --ray`, here on
    a local 2-CPU Ray runtime). The clones hold `studies/`, whose pipeline `cxrprune repro`
    leaves alone without a target, as `dvc repro` does."""
    seq = tiny_study[0]
    par = clone_repo(tmp_path_factory.mktemp("ray") / "ws")
    out = make("repro-ray", par, "RAY_ARGS=--cpus 2 --progress lines",
               extra_env={"RAY_USAGE_STATS_ENABLED": "0"}, drop_env=("OMP_NUM_THREADS",))
    return seq, par, out


@pytest.mark.slow
@needs_ray
def test_local_ray_runs_seeds_in_parallel_and_records_what_dvc_repro_would(twins):
    seq, par, out = twins
    info = summary(par)
    assert info["task_resources"]["num_cpus"] == 1 and info["task_resources"]["threads"] == 1
    states = info["stages"]
    assert {a: s["state"] for a, s in states.items()} == {f"{k}@{s}": "done" for s in SEEDS for k in ("train", "prune")}
    t0, t1 = states["train@0"], states["train@1"]
    assert t0["start"] < t1["end"] and t1["start"] < t0["end"], "the two seeds did not train at the same time"
    for a in states:
        assert f"cxrprune {a.split('@')[0]} --seed {a.split('@')[1]}" in (par / LOGS / f"{a}.log").read_text()
    assert "train@0: done" in out and "/#/experiments/" in out  # the live view, with links
    assert not [a for a in states if a.startswith("pie-")], "the opt-in study ran without being asked for"
    assert "/#/experiments/" in states["train@0"]["link"]

    # dvc.lock: every stage, command, parameter and hash is the sequential run's, except the
    # training folders (run.json holds a fresh MLflow run id, history.csv wall times, and
    # model.pt names its zip root after the writer's temporary file), the measured latencies
    # (efficiency files, the analyze outputs and the deployment page that report them) and what
    # hashes those.
    a, b = lock(seq), lock(par)
    assert sorted(a) == sorted(b)
    preds, timed = "data/predictions/synthetic", {"metrics/synthetic/efficiency.csv", "metrics/synthetic/summary.json",
                                                 "plots/synthetic/pareto.csv", "plots/synthetic/figures"}
    expected_diff = {("analyze", "deps"): {"data/models/synthetic", preds}, ("evaluate", "deps"): {preds},
                     ("analyze", "outs"): timed, ("report", "deps"): timed,
                     ("deployment", "deps"): timed & {"metrics/synthetic/efficiency.csv", "metrics/synthetic/summary.json"},
                     ("deployment", "outs"): {f"reports/synthetic/deployment.{x}" for x in ("json", "md", "png")}}
    for s in SEEDS:
        expected_diff[(f"train@{s}", "outs")] = {f"data/models/synthetic/seed-{s}"}
        expected_diff[(f"prune@{s}", "deps")] = {f"data/models/synthetic/seed-{s}/model.pt"}
        expected_diff[(f"prune@{s}", "outs")] = {f"{preds}/efficiency-seed-{s}.csv"}
    for stage in a:
        assert a[stage]["cmd"] == b[stage]["cmd"] and a[stage].get("params") == b[stage].get("params"), stage
        for kind in ("deps", "outs"):
            ha, hb = hashes(a[stage], kind), hashes(b[stage], kind)
            assert ha.keys() == hb.keys(), (stage, kind)
            assert {p for p in ha if ha[p] != hb[p]} <= expected_diff.get((stage, kind), set()), (stage, kind)
    for s in SEEDS:
        table = f"{preds}/seed-{s}.parquet"
        assert hashes(b[f"prune@{s}"], "outs")[table] == hashes(a[f"prune@{s}"], "outs")[table]  # identical predictions
        ma, mb = (ws / f"data/models/synthetic/seed-{s}" for ws in (seq, par))
        assert zip_members(ma / "model.pt") == zip_members(mb / "model.pt")  # same weights, byte for byte
        ha, hb = (pd.read_csv(m / "history.csv").drop(columns="seconds") for m in (ma, mb))
        pd.testing.assert_frame_equal(ha, hb)
        ra, rb = (json.loads((m / "run.json").read_text()) for m in (ma, mb))
        assert ra.keys() == rb.keys() and ra["experiment_id"] == rb["experiment_id"]
        assert rb["tracking_uri"] == f"sqlite:///{par / 'mlflow.db'}"
    for f in ["metrics/synthetic/per_class.csv", "metrics/synthetic/evaluate.json", "plots/synthetic/fcd_pairs.csv"]:
        assert (seq / f).read_bytes() == (par / f).read_bytes(), f
    sa, sb = (json.loads((ws / "metrics/synthetic/summary.json").read_text()) for ws in (seq, par))
    sa.pop("operating_points"), sb.pop("operating_points")  # carry measured latencies
    assert sa == sb

    # afterwards: dvc status is clean, plain dvc repro reruns nothing, a second run does nothing
    assert dvc_status(par) == {}
    assert stages_run(run(["dvc", "repro"], par)) == set()
    again = repro_ray(par, "--ray", "--cpus", "2")
    assert again.returncode == 0 and "every per-seed stage is up to date" in again.stderr, again.stderr[-3000:]


@pytest.mark.slow
@needs_ray
def test_mlflow_runs_of_the_ray_tasks(twins):
    import mlflow

    _, par, _ = twins
    mlflow.set_tracking_uri(f"sqlite:///{par / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("cxrprune")
    parents = mlflow.search_runs([exp.experiment_id], filter_string="tags.cxrprune_stage = 'train'")
    assert sorted(parents["tags.seed"].astype(int)) == SEEDS
    assert sorted(parents["tags.dvc_stage"]) == [f"train@{s}" for s in SEEDS]
    for _, parent in parents.iterrows():
        children = mlflow.search_runs([exp.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
        assert len(children) == N_BLOCKS  # one child per (method, level) block of the tiny config
        assert set(children["tags.dvc_stage"]) == {f"prune@{parent['tags.seed']}"}


