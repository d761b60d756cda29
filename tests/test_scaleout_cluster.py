"""``cxrprune repro --ray`` on a real cluster and under failure, on copies of the shared tiny
study (test_scaleout.py shows that a Ray run of it records what ``dvc repro`` does, so a copy
of either is the same starting point; these tests do not wait for that twin):

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

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from ray_runs import BIN, LOGS, cxr_env, dvc_status, free_port, hashes, lock, needs_ray, repro_ray, set_param, summary
from workspaces import SEEDS, copy_workspace, run

from cxrprune.core.layout import RAY_LOG_DIR


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
def test_two_node_cluster_places_seeds_on_the_worker_and_survives_a_failing_seed(tiny_study, ray_cluster, tmp_path):
    address, ray_env = ray_cluster
    ws = copy_workspace(tiny_study[0], tmp_path / "ws")
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
    assert dvc_status(ws, "prune") == {}  # the stages after prune: test_scaleout.py's twins
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
def test_killed_worker_and_ctrl_c_leave_no_partial_output(tiny_study, tmp_path):
    """Seed 1's Ray worker is killed (no retries): seed 0 trains on. Then Ctrl-C: seed 0 is
    cancelled, its stage process dies with its worker, no output of either remains."""
    ws = copy_workspace(tiny_study[0], tmp_path / "ws")
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
def test_dvc_remote_mode_pulls_inputs_and_pushes_outputs(tiny_study, tmp_path):
    ws = copy_workspace(tiny_study[0], tmp_path / "ws")
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
