"""The GPU paths: training, pruning, inference and the efficiency timing on a CUDA device.

Oracles: the same computation on the CPU (fp32 on CUDA is IEEE fp32 here, so one training
step's loss and gradients agree to float rounding), ``torch.nn.utils.prune`` for the global
L1 masks, and the run itself repeated (a seed gives the same weights and predictions twice on
the same GPU, ``train.deterministic``). Without a CUDA device every test here is skipped with
the reason in the summary; `pytest tests/test_cuda.py` on a machine with a GPU runs them
(``benchmarks/bench_gpu.py`` runs them there with the GPU benchmark).
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from cxrprune.compression.methods.base import Context
from cxrprune.compression.predict import predict_probs
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.config import PruneConfig, TrainConfig
from cxrprune.core.numerics import resolve_precision
from cxrprune.core.runtime import cache_on_device
from cxrprune.training.loop import adam, train_epoch, train_model
from cxrprune.training.models import build_model

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="NO CUDA DEVICE: the GPU paths (training, pruning, inference, timing on cuda) are not tested on this "
           "machine; run `pytest tests/test_cuda.py` on one with a GPU")
REPO = Path(__file__).resolve().parents[1]

CUDA = torch.device("cuda")
CLASSES = [f"c{i}" for i in range(6)]
SIZE = 32


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Images with a learnable signal: class k brightens its own horizontal band."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(np.float32)
    x = rng.normal(90, 25, (n, SIZE, SIZE))
    band = SIZE // len(CLASSES)
    for k in range(len(CLASSES)):
        x[:, k * band:(k + 1) * band, :] += 60 * y[:, k, None, None]
    labels = pd.DataFrame(y, columns=CLASSES)
    labels.insert(0, "image_id", [f"i{i}" for i in range(n)])
    return labels, np.clip(x, 0, 255).astype(np.uint8)


def _cfg(**changes) -> TrainConfig:
    base = TrainConfig(arch="resnet10", epochs=3, patience=3, batch_size=64, lr=1e-3, precision="fp32",
                       fused_adam=True, device="cuda", threads=2)
    return dataclasses.replace(base, **changes)


def _grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().double().cpu().flatten() for p in model.parameters()])


@needs_cuda
def test_precision_auto_is_bf16_on_a_gpu_with_native_bf16():
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    assert resolve_precision("auto", CUDA) == expected


@needs_cuda
def test_one_training_step_on_cuda_matches_the_same_step_on_the_cpu():
    """Same weights, batch order and augmentation (drawn on the CPU generator): the loss and
    every gradient agree to fp32 rounding, which TF32 convolutions (cuDNN's default) would not."""
    labels, images = _data(64, 0)
    y = torch.from_numpy(labels[CLASSES].to_numpy(copy=True))
    x = torch.from_numpy(images)
    torch.manual_seed(0)
    cpu_model = build_model("resnet10", len(CLASSES)).to(memory_format=torch.channels_last)
    gpu_model = copy.deepcopy(cpu_model).to(CUDA)
    out = {}
    for name, model, device in (("cpu", cpu_model, torch.device("cpu")), ("cuda", gpu_model, CUDA)):
        cfg = _cfg(device=device.type, conv_weight_grad="native", fused_adam=False)
        loss = train_epoch(model, adam(model.parameters(), cfg), nn.BCEWithLogitsLoss(), x.to(device), y.to(device),
                           cfg, torch.Generator().manual_seed(1), device)  # one step: batch = all 64 images
        out[name] = (loss, _grads(model))
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-5)
    g_cpu, g_gpu = out["cpu"][1], out["cuda"][1]
    assert float((g_gpu - g_cpu).norm() / g_cpu.norm()) < 1e-4


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_a_seed_trains_to_the_same_weights_twice_on_the_same_gpu(precision):
    train_labels, train_images = _data(512, 1)
    val_labels, val_images = _data(128, 2)
    cfg = _cfg(precision=precision)
    runs = [train_model(cfg, 7, train_labels, train_images, val_labels, val_images, CLASSES) for _ in range(2)]
    first, second = (r.model.state_dict() for r in runs)
    differing = [k for k in first if not torch.equal(first[k], second[k])]
    assert differing == [], f"{len(differing)} of {len(first)} tensors differ between two runs of one seed"
    pd.testing.assert_frame_equal(runs[0].history.drop(columns="seconds"), runs[1].history.drop(columns="seconds"))
    assert runs[0].history["val_map"].iloc[-1] > 0.5  # it learned: 6 classes, chance AP ~0.3
    assert next(runs[0].model.parameters()).device.type == "cuda"


@needs_cuda
def test_predictions_on_cuda_repeat_exactly_and_match_the_cpu():
    _, images = _data(300, 3)
    torch.manual_seed(0)
    model = build_model("resnet10", len(CLASSES)).eval()
    x = torch.from_numpy(images)
    cpu = predict_probs(model, x, 128, torch.device("cpu"))
    gpu_model = copy.deepcopy(model).to(CUDA, memory_format=torch.channels_last)
    on_device = cache_on_device(x, CUDA)
    assert on_device.device.type == "cuda"
    first, second = (predict_probs(gpu_model, on_device, 128, CUDA) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, cpu, rtol=0, atol=1e-5)


@needs_cuda
def test_the_default_methods_prune_and_predict_on_cuda_as_on_the_cpu():
    """l1, random and int8 predictions of the GPU run against the CPU run's; the 90% l1
    model's predictions against those of torch.nn.utils.prune's global L1 mask of the same
    weights; every efficiency row timed, the torch ones on the GPU engine."""
    _, images = _data(256, 4)
    val_labels, val_images = _data(64, 5)
    x = torch.from_numpy(images)
    torch.manual_seed(0)
    model = build_model("resnet10", len(CLASSES)).eval()
    levels = [0.0, 0.5, 0.9]
    methods = ["l1", "random", "int8"]
    prune_cfg = PruneConfig(methods=methods, levels=levels, calibration_images=32, efficiency_repeats=1,
                            latency_rounds=6)
    split = lambda name: (val_images, val_labels[CLASSES].to_numpy())  # noqa: E731 - int8's calibration images
    results, efficiency = {}, []
    for device in (torch.device("cpu"), CUDA):
        ctx = Context(0, prune_cfg, TrainConfig(), device, SIZE, split)
        rows = efficiency if device.type == "cuda" else None
        results[device.type] = prune_and_predict(copy.deepcopy(model), x, methods, levels, 0, 128, device,
                                                 context=ctx, efficiency=rows, timed=device.type == "cuda")
    assert [(r.method, r.sparsity) for r in results["cuda"]] == [(r.method, r.sparsity) for r in results["cpu"]]
    for cpu, gpu in zip(results["cpu"], results["cuda"], strict=True):
        assert gpu.measured_sparsity == cpu.measured_sparsity, (cpu.method, cpu.sparsity)
        # int8 runs in ONNX Runtime on the CPU whatever the torch device: equal, not close
        tol = 0 if cpu.method == "int8" else 1e-5
        np.testing.assert_allclose(gpu.probs, cpu.probs, rtol=0, atol=tol, err_msg=f"{cpu.method} {cpu.sparsity}")

    oracle = copy.deepcopy(model)
    params = [(m, "weight") for m in oracle.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=0.9)
    l1_90 = next(r for r in results["cuda"] if (r.method, r.sparsity) == ("l1", 0.9))
    np.testing.assert_allclose(l1_90.probs, predict_probs(oracle, x, 128, torch.device("cpu")), rtol=0, atol=1e-5)

    engines = {row["method"]: row["engine"] for row in efficiency}
    assert engines == {"dense": "torch-cuda", "l1": "torch-cuda", "random": "torch-cuda", "int8": "onnxruntime-cpu"}
    assert all(np.isfinite(row["latency_ms_b1"]) and row["images_per_s_b64"] > 0 for row in efficiency), efficiency


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the GPU checks run instead")
def test_the_gpu_checks_say_in_one_line_that_there_is_no_gpu():
    for cmd in (["bash", "benchmarks/gpu_run.sh"], [sys.executable, "benchmarks/bench_gpu.py"]):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "PYTHONPATH": str(REPO / "src"),
                                   "OUT": "/nonexistent/never-made"} if cmd[0] == "bash" else None)
        assert proc.returncode == 1, (cmd, proc.stdout, proc.stderr)
        assert "no CUDA device on this machine" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
