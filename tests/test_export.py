"""``cxrprune export``: the artifact the deployment report points at, made on demand.

Oracles: the prune stage's own outputs in a real tiny study (the efficiency table's bytes of
the same (method, level) artifact, the prediction table), the artifact loaded the way its
sidecar says and run again, and ONNX Runtime for the int8 file."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from cxrprune.compression.artifacts import load_sparse
from cxrprune.training.models import build_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(tiny_study, tmp_path_factory):
    from workspaces import copy_workspace

    return copy_workspace(tiny_study[0], tmp_path_factory.mktemp("export") / "ws")


def _cli(ws, *args: str) -> subprocess.CompletedProcess:
    from workspaces import env

    return subprocess.run(["cxrprune", "export", *args], cwd=ws, env=env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def test_an_l1_artifact_is_the_measured_file_and_predicts_what_the_study_predicted(ws):
    proc = _cli(ws, "--method", "l1", "--level", "0.5")
    assert proc.returncode == 0, proc.stderr
    path = ws / "data/artifacts/synthetic/seed-0/l1-0.5.pt"
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["bytes"] == path.stat().st_size and side["format"] == "sparse" and side["seed"] == 0
    eff = pd.read_csv(ws / "data/predictions/synthetic/efficiency-seed-0.csv")
    row = eff.loc[(eff["method"] == "l1") & np.isclose(eff["level"], 0.5)]
    # the file the deployment page costed; torch.save keeps the file's name in the archive
    # ("model" there, "l1-0.5" here), a few bytes per tensor
    assert abs(int(row["bytes"].iloc[0]) - side["bytes"]) <= 0.001 * side["bytes"]
    assert side["check"]["max_abs_probability_difference"] == 0.0
    # loaded as the sidecar says, it is the pruned network: half the prunable weights are zero
    model = build_model(side["arch"], len(side["classes"]), "none", image_size=side["image_size"])
    model.load_state_dict(load_sparse(path))
    convs = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zero = sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
    assert zero == pytest.approx(side["measured_sparsity"], abs=1e-6) and zero == pytest.approx(0.5, abs=0.01)
    assert path.name in proc.stdout and "how to load it" in proc.stdout


def test_an_int8_artifact_runs_in_onnx_runtime(ws):
    import onnxruntime as ort

    proc = _cli(ws, "--method", "int8", "--level", "0", "--out", "deploy/model.onnx")
    assert proc.returncode == 0, proc.stderr
    side = json.loads((ws / "deploy/model.onnx.json").read_text())
    assert side["format"] == "onnx" and side["check"]["max_abs_probability_difference"] < 1e-5
    session = ort.InferenceSession(str(ws / "deploy/model.onnx"), providers=["CPUExecutionProvider"])
    size = side["image_size"]
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, size, size), np.float32)})[0]
    assert out.shape == (1, len(side["classes"]))


def test_bad_requests_are_one_error_line_and_write_nothing(ws):
    from cxrprune.compression.export import export
    from cxrprune.core.config import load_params
    from cxrprune.core.errors import ConfigError

    proc = _cli(ws, "--method", "l1", "--level", "0.3")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "cxrprune: error: --level 0.3 is not a level the study ran for l1 (0, 0.5, 0.9)"], proc.stderr
    params = load_params(ws / "params.yaml")
    for args, message in [((0, "fp16", 0.0), "--method fp16 is not in params.yaml prune.methods"),
                          ((7, "l1", 0.5), "--seed 7 is not in params.yaml seeds [0, 1]")]:
        with pytest.raises(ConfigError) as err:
            export(params, *args, ws / "nothing.pt")
        assert message in str(err.value)
    assert not (ws / "nothing.pt").exists() and not list((ws / "data/artifacts/synthetic").glob("*/*-0.3*"))
