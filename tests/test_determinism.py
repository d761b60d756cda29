"""Determinism and resumption on the CPU.

In-process, on a tiny prepared fixture: the same params and seed give byte-identical weights,
history and predictions twice in a row, and a training resumed from any epoch's resume file
(after the process's RNGs were disturbed) ends with exactly the uninterrupted weights.

In a subprocess, in a tiny workspace: ``cxrprune train`` SIGKILLed after its first epoch
resumes, in the same MLflow run, to the same ``model.pt`` bytes and history as an
uninterrupted run (equal weights give equal predictions, shown in process above); a prune
SIGKILLed while writing its table leaves the previous table.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from nih_layout import write_nih_dataset
from robustness_helpers import cxrprune, popen_cxrprune, tiny_workspace
from workspaces import env

from cxrprune.compression.predictions import predictions_table
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.atomic import write_parquet
from cxrprune.core.config import DataConfig, TrainConfig, from_dict, load_params
from cxrprune.datasets.prepare import load_meta, load_split, prepare_dataset
from cxrprune.training import resume as checkpoint
from cxrprune.training.loop import train_model

CFG = TrainConfig(arch="resnet10", epochs=4, patience=4, batch_size=16, threads=1, device="cpu", rotation=10.0)
SEED = 5
METHODS, LEVELS = ["l1", "random"], [0.0, 0.5, 0.9]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    write_nih_dataset(root / "raw", per_split=24, size=40)
    prepare_dataset(DataConfig(name="fixture", root=str(root / "raw"), image_size=32, workers=1), root / "prep")
    splits = {s: load_split(root / "prep", s) for s in ("train", "val", "test")}
    return splits, load_meta(root / "prep")["classes"]


def _train(data, **kwargs):
    splits, classes = data
    (train_labels, train_images), (val_labels, val_images) = splits["train"], splits["val"]
    return train_model(CFG, SEED, train_labels, train_images, val_labels, val_images, classes, **kwargs)


def _predict(data, model) -> pd.DataFrame:
    splits, classes = data
    labels, images = splits["test"]
    model = copy.deepcopy(model)  # pruning works in place
    results = prune_and_predict(model, torch.from_numpy(np.array(images)), METHODS, LEVELS, SEED, 32, "cpu")
    return predictions_table(results, labels["image_id"].tolist(), classes)


def _weights(model) -> dict[str, tuple]:
    return {k: (str(v.dtype), tuple(v.shape), v.detach().cpu().contiguous().numpy().tobytes())
            for k, v in model.state_dict().items()}


def _history(result) -> pd.DataFrame:
    return result.history.drop(columns="seconds")


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(data):
    result = _train(data)
    return result, _predict(data, result.model)


def test_same_seed_gives_identical_weights_history_and_predictions(data, uninterrupted, tmp_path):
    first, first_table = uninterrupted
    second = _train(data)
    assert _weights(second.model) == _weights(first.model)
    pd.testing.assert_frame_equal(_history(second), _history(first), check_exact=True)
    second_table = _predict(data, second.model)
    pd.testing.assert_frame_equal(second_table, first_table, check_exact=True)
    write_parquet(tmp_path / "a.parquet", first_table)
    write_parquet(tmp_path / "b.parquet", second_table)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


@pytest.mark.parametrize("crash_after", [0, 2, 3])
def test_resumed_training_ends_with_the_uninterrupted_weights(data, uninterrupted, tmp_path, crash_after):
    reference, reference_table = uninterrupted
    resume = checkpoint.ResumeFile(tmp_path / "resume.pt", "fingerprint")

    def save_then_crash(state):
        resume.save({**state, "run_id": "r"})
        if state["epoch"] == crash_after:
            raise _Crash

    with pytest.raises(_Crash):
        _train(data, on_checkpoint=save_then_crash)
    torch.manual_seed(12345)  # a new process: other global RNG states
    np.random.seed(999)
    torch.rand(100)
    state = resume.load()
    assert state["epoch"] == crash_after and state["run_id"] == "r"
    seen = []
    resumed = _train(data, resume=state, on_epoch=lambda row: seen.append(row["epoch"]))
    assert seen == list(range(crash_after + 1, CFG.epochs))
    assert _weights(resumed.model) == _weights(reference.model)
    assert resumed.best_epoch == reference.best_epoch and resumed.best_val_loss == reference.best_val_loss
    pd.testing.assert_frame_equal(_history(resumed), _history(reference), check_exact=True)
    pd.testing.assert_frame_equal(_predict(data, resumed.model), reference_table, check_exact=True)


def test_a_resume_file_of_other_params_or_damaged_is_ignored(tmp_path, capsys):
    path = tmp_path / "resume" / "fixture" / "seed-0.pt"
    checkpoint.ResumeFile(path, "old").save({"epoch": 1, "run_id": "abc"})
    other = checkpoint.ResumeFile(path, "new")
    assert other.load() is None and other.superseded_run_id == "abc"
    assert "other train/data params" in capsys.readouterr().err
    path.write_bytes(b"PK\x03\x04 truncated")
    damaged = checkpoint.ResumeFile(path, "new")
    assert damaged.load() is None and "unreadable" in capsys.readouterr().err
    damaged.delete()
    assert not (tmp_path / "resume").exists(), "the emptied resume folders are removed"


def test_the_fingerprint_follows_train_and_data_params_not_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = from_dict({"train": {"lr": 0.001}})
    assert checkpoint.fingerprint(base, 0) == checkpoint.fingerprint(from_dict({"data": {"workers": 3}}), 0)
    assert checkpoint.fingerprint(base, 0) != checkpoint.fingerprint(from_dict({"train": {"lr": 0.002}}), 0)
    assert checkpoint.fingerprint(base, 0) != checkpoint.fingerprint(from_dict({"data": {"image_size": 64}}), 0)
    assert checkpoint.fingerprint(base, 0) != checkpoint.fingerprint(base, 1)


# --- in a subprocess: SIGKILL ----------------------------------------------------------------

EPOCHS = 5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tiny_workspace(tmp_path_factory.mktemp("killed"), epochs=EPOCHS, patience=EPOCHS)
    cxrprune(["generate"], ws)
    cxrprune(["prepare"], ws)
    return ws


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _client(ws: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")


def _train_runs(ws: Path) -> list:
    client = _client(ws)
    exp = client.get_experiment_by_name("cxrprune")
    return client.search_runs([exp.experiment_id], filter_string="tags.cxrprune_stage = 'train'")


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(workspace):
    ws = workspace
    out = ws / "data/models/synthetic/seed-0"
    resume_file = ws / "data/.resume/synthetic/train-seed-0.pt"
    proc = popen_cxrprune(["train", "--seed", "0"], ws)
    deadline = time.monotonic() + 900  # a hang detector: the first epoch ends in seconds
    epoch = -1
    while proc.poll() is None and time.monotonic() < deadline:
        if resume_file.exists():
            try:
                epoch = torch.load(resume_file, weights_only=True)["epoch"]
            except Exception:  # replaced while read: try again
                epoch = -1
            if epoch >= 0:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}, last epoch seen {epoch})"
    assert 0 <= epoch < EPOCHS - 1 and not (out / "model.pt").exists() and resume_file.exists()

    resumed = cxrprune(["train", "--seed", "0"], ws)
    assert "train: resuming seed 0 after" in resumed.stderr
    assert not resume_file.exists() and not (ws / "data/.resume").exists()
    runs = _train_runs(ws)
    assert len(runs) == 1, "the resumed training must continue the killed run, not start another"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed"] == "true" and run.data.tags["resume_count"] == "1"
    steps = [m.step for m in _client(ws).get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == list(range(EPOCHS)), "every epoch logged exactly once"
    resumed_files = {name: (out / name).read_bytes() for name in ("model.pt", "history.csv")}

    # The same training uninterrupted (as `dvc repro -f train@0` would: outputs deleted first).
    # Equal weights give equal predictions: prune's determinism is tested in process above.
    for name in ("model.pt", "history.csv", "run.json"):
        (out / name).unlink()
    cxrprune(["train", "--seed", "0"], ws)
    assert (out / "model.pt").read_bytes() == resumed_files["model.pt"], "model.pt differs after the resume"
    history = pd.read_csv(out / "history.csv").drop(columns="seconds")
    before = pd.read_csv(io.BytesIO(resumed_files["history.csv"])).drop(columns="seconds")
    pd.testing.assert_frame_equal(history, before, check_exact=True)


@pytest.mark.slow
def test_a_prune_killed_while_writing_its_table_leaves_the_previous_one(workspace):
    ws = workspace
    table = ws / "data/predictions/synthetic/seed-0.parquet"
    if not table.exists():
        cxrprune(["train", "--seed", "0"], ws)
        cxrprune(["prune", "--seed", "0"], ws)
    before = _md5(table)
    code = (
        "import os, signal, pandas as pd\n"
        "real = pd.DataFrame.to_parquet\n"
        "def half_then_die(self, path, *args, **kwargs):\n"
        "    real(self, path, *args, **kwargs)\n"
        "    data = open(path, 'rb').read()\n"
        "    open(path, 'wb').write(data[:len(data) // 2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "pd.DataFrame.to_parquet = half_then_die\n"
        "from cxrprune.cli import main\n"
        "main(['prune', '--seed', '0'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env(), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _md5(table) == before, "the table was replaced by a partial one"
    leftovers = list(table.parent.glob(".seed-0.parquet.*"))
    assert len(leftovers) == 1, leftovers  # what SIGKILL mid-write leaves: a hidden temporary
    from cxrprune.compression.predictions import read_predictions

    labels = pd.read_parquet(ws / "data/prepared/synthetic/labels_test.parquet")
    classes = load_meta(ws / "data/prepared/synthetic")["classes"]
    params = load_params(ws / "params.yaml")  # the workspace's own methods and levels
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        read_predictions(params, 0, labels["image_id"].tolist(), classes)  # complete and valid
    finally:
        os.chdir(cwd)
    cxrprune(["prune", "--seed", "0"], ws)  # the next complete write takes the dead writer's leftover away
    assert _md5(table) == before and not list(table.parent.glob(".seed-0.parquet.*"))
