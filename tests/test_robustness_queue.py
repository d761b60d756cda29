"""Concurrent experiments: two `dvc exp run --queue` variants run by `dvc queue start -j 2`
both complete and record every run in the workspace's one MLflow store (not a store in
their temporary copies), tagged with the experiment name, without "database is locked";
and several processes creating a new sqlite store at once all succeed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from robustness_helpers import tiny_workspace
from workspaces import env, run

EXPERIMENTS = {"exp-lr-a": "0.001", "exp-lr-b": "0.002"}
LEVELS = [0.0, 0.9]
HANG_S = 1200  # a hang detector: the two experiments take about 2 min on the AVX2 kind

WRITER = """
import os, sys
os.environ["DVC_ROOT"] = sys.argv[1]
import mlflow
from cxrprune.tracking import store
from cxrprune.core.config import MlflowConfig
exp = store.start(MlflowConfig(experiment="race"))
with mlflow.start_run(experiment_id=exp, tags={"writer": sys.argv[2]}) as r:
    store.log_params(r.info.run_id, {"writer": sys.argv[2]})
    for step in range(20):
        store.log_metrics(r.info.run_id, {"x": step, "y": -step}, step=step)
print("ok")
"""


@pytest.mark.slow
def test_processes_creating_a_new_store_at_once_all_succeed(tmp_path):
    """MLflow alone fails here (alembic: "table _alembic_tmp_metrics already exists");
    store.start creates the store under a lock."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(i)], cwd=tmp_path, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=600) for p in procs]  # a hang detector
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and "ok" in out, err[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.data.tags["writer"] for r in runs) == ["0", "1", "2", "3"]
    assert all(len(client.get_metric_history(r.info.run_id, "x")) == 20 for r in runs)


def _queue_status(ws: Path) -> str:
    proc = subprocess.run(["dvc", "queue", "status"], cwd=ws, env=env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    return proc.stdout + proc.stderr


def _outcome(status: str, name: str) -> str | None:
    """``name``'s final state in ``dvc queue status`` (Success, Failed), None before it has one."""
    line = next((ln for ln in status.splitlines() if f" {name} " in f" {ln} "), "")
    return next((word for word in ("Success", "Failed") if word in line), None)


@pytest.mark.slow
def test_two_queued_experiments_are_both_fully_tracked_in_the_workspace_store(tmp_path):
    ws = tiny_workspace(tmp_path, seeds=(0,), levels=LEVELS, epochs=1, patience=1)
    for name, lr in EXPERIMENTS.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}", "analyze"], ws)
    try:
        # Output to a file, not a pipe: DVC launches each worker from a forked process that keeps
        # the caller's stdout open until its worker exits, so under a pipe this call would wait for
        # the workers' own idle shutdown (a fresh-clone run of the suite hung there once, both workers
        # started) instead of returning as it does in a terminal. The loop below is the hang
        # detector, and it says which experiment was still queued or running.
        with open(tmp_path / "queue-start.log", "w") as log:
            started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=ws, env=env(), stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300)
        start_log = (tmp_path / "queue-start.log").read_text()
        assert started.returncode == 0 and "Started '2'" in start_log, start_log
        t0 = time.monotonic()
        status = _queue_status(ws)
        # Until each experiment has an outcome: a task a worker has taken but not yet begun is
        # neither "Queued" nor "Running" in the status for a moment.
        while not all(_outcome(status, name) for name in EXPERIMENTS):
            if time.monotonic() - t0 > HANG_S:
                workers = "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                                    for p in sorted((ws / ".dvc" / "tmp" / "exps").rglob("*.out")))
                raise AssertionError(f"the queue still runs after {HANG_S} s (a hang):\n{status}\n{workers}")
            time.sleep(15)  # each status call is a DVC process: a few CPU-seconds on a busy machine
            status = _queue_status(ws)
        logs = {name: run(["dvc", "queue", "logs", name], ws) for name in EXPERIMENTS}
        for name in EXPERIMENTS:
            assert _outcome(status, name) == "Success", f"{name}: {status}\n{logs[name][-3000:]}"
            assert "database is locked" not in logs[name] and "Traceback" not in logs[name], logs[name][-3000:]
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=ws, env=env(), capture_output=True,
                       stdin=subprocess.DEVNULL)

    # One store, at the workspace root; none in the experiments' temporary copies.
    assert (ws / "mlflow.db").is_file()
    assert not list((ws / ".dvc").rglob("mlflow.db"))
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cxrprune")
    assert exp.artifact_location.startswith((ws / "mlruns").as_uri())
    for name, lr in EXPERIMENTS.items():
        runs = client.search_runs([exp.experiment_id], f"tags.dvc_exp_name = '{name}'")
        by_stage: dict[str, list] = {}
        for r in runs:
            by_stage.setdefault(r.data.tags["cxrprune_stage"], []).append(r)
        assert {k: len(v) for k, v in by_stage.items()} == {"train": 1, "prune": 2 * len(LEVELS), "analyze": 1}, name
        (train,) = by_stage["train"]
        assert train.info.status == "FINISHED" and float(train.data.params["train.lr"]) == float(lr)
        assert train.data.tags["dvc_stage"] == "train@0"
        assert all(c.data.tags["mlflow.parentRunId"] == train.info.run_id for c in by_stage["prune"])
        (analysis,) = by_stage["analyze"]
        artifacts = Path(analysis.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(ws / "mlruns") and any(artifacts.rglob("*.png"))
    shown = run(["dvc", "exp", "show", "--json"], ws)
    assert all(name in shown for name in EXPERIMENTS)
