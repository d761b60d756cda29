"""``cxrprune repro --ray``: per-seed stages as Ray tasks, recorded by DVC as if ``dvc repro`` ran.

Fast tests cover the planning, the resources each task asks for, the MLflow links, output
clean-up and the command line. The slow ones run the tiny study of test_pipeline:

- a local Ray runtime with 2 CPUs runs the two seeds in parallel; ``dvc.lock`` and the
  outputs equal those of a plain sequential ``dvc repro`` in a twin workspace;
- a two-node Ray cluster on loopback (head and worker with different custom resources)
  places the seed tasks on the worker; a seed whose checkpoint is corrupted fails, is
  reported with its log, the other seed is recorded, and a rerun does only what is left;
- Ctrl-C cancels the tasks and leaves no partial output;
- DVC-remote mode: tasks run in private copies, pull inputs and push outputs.

The cluster is started with ``ray start --block`` in its own process group and stopped by
signalling that group, never with ``ray stop`` (which kills every Ray process on the
machine, other users' included).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workspaces import HANG_S, N_BLOCKS, SEEDS, Hung, clone_repo, copy_workspace, env, make, make_workspace, run, \
    stages_run

from cxrprune.cli import build_parser
from cxrprune.core.layout import RAY_LOG_DIR
from cxrprune.scaleout import common, plan, progress, resources, worker

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray: pip install ray")

BIN = Path(sys.executable).parent
LOGS = RAY_LOG_DIR


# ----------------------------------------------------------------------------- helpers


def cxr_env(**extra: str) -> dict:
    e = env()
    e.pop("OMP_NUM_THREADS", None)  # the tasks get theirs from the scheduler
    e["RAY_USAGE_STATS_ENABLED"] = "0"
    e.update(extra)
    return e


def repro_ray(ws: Path, *args: str, extra_env: dict | None = None, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """``cxrprune repro --progress lines ARGS``; the timeout is a hang detector."""
    cmd = [str(BIN / "cxrprune"), "repro", "--progress", "lines", *args]
    t0 = time.monotonic()
    try:
        return subprocess.run(cmd, cwd=ws, env=cxr_env(**(extra_env or {})), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise Hung(f"`cxrprune repro {' '.join(args)}` in {ws} still running after {time.monotonic() - t0:.0f} s "
                   f"(hang detector {timeout:.0f} s):\n{str(exc.stderr or '')[-3000:]}") from None


def summary(ws: Path) -> dict:
    return json.loads((ws / LOGS / "summary.json").read_text())


def lock(ws: Path) -> dict:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"]


def hashes(entry: dict, kind: str) -> dict:
    return {d["path"]: d.get("md5") for d in entry.get(kind, [])}


def dvc_status(ws: Path, *targets: str) -> dict:
    """``dvc status`` of the root pipeline (without targets DVC checks every dvc.yaml, the
    opt-in study's too, which these tests never run)."""
    out = subprocess.run([str(BIN / "dvc"), "status", "--json", *(targets or ["dvc.yaml"])], cwd=ws, env=env(),
                         capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, check=True).stdout
    return json.loads(out or "{}")


def zip_members(path: Path) -> dict:
    """A torch checkpoint's records without the archive's root folder, which torch names
    after the file it first wrote (the atomic writer's random temporary name)."""
    with zipfile.ZipFile(path) as z:
        return {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_param(ws: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params[section][key] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


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


@pytest.fixture
def ray_cluster(tmp_path):
    """Head (1 CPU, resource `head`) and worker (1 CPU, resource `worker_node`) on loopback,
    token-authenticated, each a `ray start --block` in its own process group."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    extra = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    e = {**cxr_env(**extra), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        p = subprocess.Popen([str(BIN / "ray"), "start", *args, *common], env=e, start_new_session=True,
                             stdout=open(temp / f"{name}.out", "w"), stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    try:
        head = start(["--head", f"--port={port}", '--resources={"head": 1}', "--include-dashboard=false",
                      f"--temp-dir={temp}"], "head")
        address = f"127.0.0.1:{port}"
        probe = (f"import ray, time\nray.init(address={address!r}, logging_level='ERROR')\n"
                 f"for _ in range(600):\n"
                 f"    if sum(n['Alive'] for n in ray.nodes()) == 2: break\n    time.sleep(0.5)\n"
                 f"print(sum(n['Alive'] for n in ray.nodes()))\n")
        deadline = time.time() + 300  # a hang detector: the worker joins in seconds
        worker = None
        while time.time() < deadline:  # the head's GCS may take a few seconds to accept the worker
            worker = worker if worker and worker.poll() is None else start(
                [f"--address={address}", '--resources={"worker_node": 1}'], "worker")
            time.sleep(3)
            assert head.poll() is None, (temp / "head.out").read_text()[-3000:]
            if worker.poll() is None:
                break
        out = subprocess.run([sys.executable, "-c", probe], env=e, capture_output=True, text=True, timeout=600)
        assert out.stdout.strip().endswith("2"), (out.stdout + out.stderr[-2000:] + (temp / "head.out").read_text()[-2000:]
                                                  + (temp / "worker.out").read_text()[-2000:])
        yield address, extra
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # anything of that node still alive
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@needs_ray
def test_two_node_cluster_places_seeds_on_the_worker_and_survives_a_failing_seed(twins, ray_cluster, tmp_path):
    address, ray_env = ray_cluster
    ws = copy_workspace(twins[1], tmp_path / "ws")
    set_param(ws, "prune", "batch_size", 128)  # both prune stages out of date, training up to date
    model = ws / "data/models/synthetic/seed-1/model.pt"
    good = model.read_bytes()
    model.write_bytes(b"not a checkpoint" * 64)  # seed 1's recorded checkpoint is corrupted
    run(["dvc", "commit", "-f", "train@1"], ws)
    predictions_before = hashes(lock(ws)["prune@1"], "outs")

    proc = repro_ray(ws, "--ray", address, "--resources", '{"worker_node": 0.5}', "--targets", "prune",
                     extra_env=ray_env)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "prune@1" in proc.stderr and f"{RAY_LOG_DIR}/prune@1.log" in proc.stderr
    info = summary(ws)
    worker = [nid for nid, n in info["nodes"].items() if "worker_node" in n["resources"]]
    assert len(info["nodes"]) == 2 and len(worker) == 1
    states = info["stages"]
    assert states["prune@0"]["state"] == "done" and states["prune@0"]["node_id"] == worker[0]
    assert states["prune@1"]["state"] == "failed" and states["prune@1"]["node_id"] == worker[0]
    assert states["train@0"]["state"] == states["train@1"]["state"] == "up to date"
    assert "cxrprune: error" in (ws / LOGS / "prune@1.log").read_text()
    # recorded: prune@0 with the new batch size; not recorded: prune@1 (no output left behind), evaluate
    status = dvc_status(ws)
    assert "prune@0" not in status and "train@1" not in status and "prune@1" in status and "evaluate" in status
    assert lock(ws)["prune@0"]["params"]["params.yaml"]["prune"]["batch_size"] == 128
    assert not (ws / "data/predictions/synthetic/seed-1.parquet").exists()
    assert not list((ws / "data/predictions/synthetic").glob(".seed-1*"))

    # fix the checkpoint, rerun: only prune@1 runs (on the worker)
    model.write_bytes(good)
    run(["dvc", "commit", "-f", "train@1"], ws)
    proc = repro_ray(ws, "--ray", address, "--resources", '{"worker_node": 0.5}', "--targets", "prune",
                     extra_env=ray_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    states = summary(ws)["stages"]
    assert [a for a, s in states.items() if s["state"] == "done"] == ["prune@1"]
    assert states["prune@1"]["node_id"] == worker[0]
    assert dvc_status(ws, "prune") == {}  # the stages after prune: the twins' test
    assert hashes(lock(ws)["prune@1"], "outs") == predictions_before  # batch size does not change predictions


def _stage_processes(ws: Path, seed: int | None = None) -> list[int]:
    """Stage commands (``cxrprune train --seed s``) running in the workspace."""
    # argv-exact: a shell wrapping the command ("sh -c 'cxrprune train --seed 0'") does not match
    needle = b"--seed\0" if seed is None else b"--seed\0%d\0" % seed
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") == str(ws) and needle in (proc / "cmdline").read_bytes() + b"\0":
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
@needs_ray
def test_killed_worker_and_ctrl_c_leave_no_partial_output(twins, tmp_path):
    """Seed 1's Ray worker is killed (no retries): seed 0 trains on. Then Ctrl-C: seed 0 is
    cancelled, its stage process dies with its worker, no output of either remains."""
    ws = copy_workspace(twins[1], tmp_path / "ws")
    # Both seeds retrain, for longer than this test lasts: with 4 epochs and early stopping,
    # seed 0 finished before the Ctrl-C on a fast machine. It is cancelled, never run out.
    set_param(ws, "train", "epochs", 200)
    set_param(ws, "train", "patience", 200)
    lock_before = lock(ws)
    proc = subprocess.Popen([str(BIN / "cxrprune"), "repro", "--ray", "--cpus", "2", "--progress", "lines",
                             "--retries", "0"], cwd=ws, env=cxr_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    models = ws / "data/models/synthetic"
    try:
        deadline = time.time() + 600  # a hang detector: Ray starts both tasks in seconds
        while len(_stage_processes(ws)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
        assert len(_stage_processes(ws)) == 2, "the two seeds never trained at the same time"
        time.sleep(1)
        (stage1,) = _stage_processes(ws, 1)
        os.kill(_parent(stage1), signal.SIGKILL)  # seed 1's Ray worker dies
        t0 = time.time()
        while _stage_processes(ws, 1) and time.time() - t0 < 120:  # a hang detector: it dies at once
            time.sleep(0.2)
        assert _stage_processes(ws, 1) == [] and len(_stage_processes(ws, 0)) == 1  # seed 0 goes on
        # what a stage killed mid-write leaves: a half checkpoint and an atomic writer's temporary
        (models / "seed-0").mkdir(exist_ok=True)
        (models / "seed-0/model.pt").write_bytes(b"half a checkpoint")
        (models / ".seed-0.old").mkdir(exist_ok=True)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)  # a hang detector: the clean-up takes seconds
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-4000:]
    assert "interrupted" in err
    t0 = time.time()
    while _stage_processes(ws) and time.time() - t0 < 120:  # a hang detector: they die with their workers
        time.sleep(0.2)
    assert _stage_processes(ws) == [], "a stage process survived the cancel"
    assert not list(models.iterdir()), list(models.iterdir())  # no output of the cut-short stages remains
    assert lock(ws)["train@0"] == lock_before["train@0"] and lock(ws)["train@1"] == lock_before["train@1"]
    status = dvc_status(ws)
    assert "train@0" in status and "train@1" in status
    states = summary(ws)["stages"]
    assert states["train@1"]["state"] == "failed" and "WorkerCrashedError" in states["train@1"]["error"]
    assert states["prune@1"]["state"] == "blocked"
    assert states["train@0"]["state"] == states["prune@0"]["state"] == "cancelled"


@pytest.mark.slow
@needs_ray
def test_dvc_remote_mode_pulls_inputs_and_pushes_outputs(twins, tmp_path):
    ws = copy_workspace(twins[1], tmp_path / "ws")
    store = tmp_path / "remote"
    run(["dvc", "remote", "add", "store", str(store)], ws)
    set_param(ws, "prune", "methods", ["l1"])  # prune reruns for both seeds, training does not
    proc = repro_ray(ws, "--ray", "--cpus", "2", "--remote", "store", "--targets", "prune",
                     extra_env={"CXRPRUNE_NODE_CACHE": str(tmp_path / "node-cache")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = summary(ws)
    assert info["mode"] == "remote"
    assert {a: s["state"] for a, s in info["stages"].items() if s["state"] == "done"} == \
        {f"prune@{s}": "done" for s in SEEDS}
    for s in SEEDS:
        log = (ws / LOGS / f"prune@{s}.log").read_text()
        assert f"in {ws}" not in log and "cxrprune-task-" in log  # ran in a private copy of the workspace
        assert "-m dvc pull -r store prepare train@" in log and "-m dvc push -r store prune@" in log
        md5 = lock(ws)[f"prune@{s}"]["outs"][0]["md5"]
        assert (store / "files/md5" / md5[:2] / md5[2:]).is_file()  # the task pushed it
        preds = pd.read_parquet(ws / f"data/predictions/synthetic/seed-{s}.parquet")
        assert set(preds["method"]) == {"l1"}
    status = dvc_status(ws, "prune")
    assert status == {}, status
    assert any((tmp_path / "node-cache").rglob("*"))  # the tasks' inputs went through the node's cache
