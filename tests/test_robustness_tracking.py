"""Tracking server trouble: a down server stops a stage before any work with one line; a store
that fails mid-run loses no checkpoint or predictions, and `cxrprune log-mlflow` writes the
missing records afterwards (once: running it again writes nothing)."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from nih_layout import write_nih_dataset
from robustness_helpers import cxrprune, tiny_workspace

from cxrprune import cli
from cxrprune.core.config import load_params
from cxrprune.core.errors import TrackingError
from cxrprune.stages import prepare as prepare_stage
from cxrprune.stages import prune as prune_stage
from cxrprune.stages import train as train_stage
from cxrprune.stats.metrics import average_precision
from cxrprune.tracking import store

EPOCHS = 3
PARAMS = {
    "seeds": [0],
    "data": {"name": "fixture", "root": "data/raw/fixture", "image_size": 32, "workers": 1},
    "train": {"arch": "resnet10", "epochs": EPOCHS, "patience": EPOCHS, "batch_size": 16, "threads": 1,
              "device": "cpu"},
    "prune": {"methods": ["l1", "random"], "levels": [0.0, 0.9], "batch_size": 64},
    "mlflow": {"experiment": "robustness"},
}


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_nih_dataset(tmp_path / "data/raw/fixture", per_split=24, size=40)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    params = load_params(tmp_path / "params.yaml")
    prepare_stage.run(params)
    yield tmp_path, params
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


def fail_after(monkeypatch, n_calls: int) -> list[int]:
    """MlflowClient.log_batch works ``n_calls`` times, then raises as a vanished server would."""
    real = MlflowClient.log_batch
    calls = [0]

    def log_batch(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] > n_calls:
            raise MlflowException("API request to http://tracking:5000 failed: Connection refused")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    return calls


def test_a_down_server_stops_training_before_any_work(workspace, monkeypatch):
    _, params = workspace
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_uri())
    monkeypatch.setattr(train_stage, "train_model", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(TrackingError, match="is not reachable"):
        train_stage.run(params, 0)
    assert not params.layout.model_dir(0).exists()
    assert not (workspace[0] / "data/.resume").exists()


def test_a_store_failing_mid_run_keeps_the_outputs_and_log_mlflow_fills_in(workspace, monkeypatch, capsys):
    tmp_path, params = workspace
    out = params.layout.model_dir(0)
    # Training: the params batch and the first epoch's metrics get through, then the store is gone.
    fail_after(monkeypatch, 2)
    train_stage.run(params, 0)
    err = capsys.readouterr().err
    assert "MLflow logging failed" in err and "cxrprune log-mlflow --seed 0" in err
    assert (out / "model.pt").is_file() and (out / "history.csv").is_file() and (out / "run.json").is_file()
    assert not (tmp_path / "data/.resume").exists()
    # Pruning: no child gets logged.
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    fail_after(monkeypatch, 0)
    prune_stage.run(params, 0)
    assert "cxrprune log-mlflow --seed 0" in capsys.readouterr().err
    table_path = params.layout.predictions_file(0)
    assert table_path.is_file()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustness")
    run_id = yaml.safe_load((out / "run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [0]

    # The store is back: the documented command writes what is missing.
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli.main(["log-mlflow", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"training run {run_id}" in printed and "epoch(s)" in printed and "4 child run(s)" in printed
    run = client.get_run(run_id)
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == list(range(EPOCHS))
    assert run.info.status == "FINISHED"
    assert run.data.tags["checkpoint_md5"] == store.file_md5(out / "model.pt")
    history = pd.read_csv(out / "history.csv")
    assert run.data.metrics["best_val_loss"] == pytest.approx(history["val_loss"].min())
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 4 and len(children) == 4, "failed children are replaced, not kept beside"
    table = pd.read_parquet(table_path)
    labels = pd.read_parquet(tmp_path / "data/prepared/fixture/labels_test.parquet")
    classes = [c for c in table.columns if c not in ("image_id", "method", "sparsity")]
    for child in finished:
        block = table[(table["method"] == child.data.tags["method"])
                      & np.isclose(table["sparsity"], float(child.data.tags["sparsity"]))]
        expected = np.nanmean(average_precision(labels[classes].to_numpy(), block[classes].to_numpy()))
        assert child.data.metrics["map"] == pytest.approx(expected)
        assert child.data.tags["predictions_md5"] == store.file_md5(table_path)

    # Once is enough.
    assert cli.main(["log-mlflow"]) == 0
    assert "nothing missing" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id], "")) == 1 + 4


@pytest.mark.slow
def test_log_mlflow_rebuilds_a_lost_store(workspace, capsys, monkeypatch):
    tmp_path, params = workspace
    train_stage.run(params, 0)
    prune_stage.run(params, 0)
    # The store is lost: a fresh one (a deleted file would stay open in this process).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'new.db'}")
    assert cli.main(["log-mlflow", "--seed", "0"]) == 0
    assert "run and params" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'new.db'}")
    exp = client.get_experiment_by_name("robustness")
    (train,) = client.search_runs([exp.experiment_id], "tags.cxrprune_stage = 'train'")
    assert train.data.tags["relogged"] == "true" and train.data.params["train.epochs"] == str(EPOCHS)
    assert len(client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{train.info.run_id}'")) == 4


@pytest.mark.slow
def test_cxrprune_train_with_a_down_server_prints_one_line_and_exits_2(tmp_path):
    ws = tiny_workspace(tmp_path)
    cxrprune(["generate"], ws)
    cxrprune(["prepare"], ws)
    proc = cxrprune(["train", "--seed", "0"], ws, check=False, MLFLOW_TRACKING_URI=closed_port_uri())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxrprune: error: MLflow tracking server http://127.0.0.1:")
    assert "is not reachable" in lines[0]
    assert not (ws / "data/models").exists() and not (ws / "data/.resume").exists()
    assert not (ws / "mlflow.db").exists()
