"""One deployable artifact, made on demand: a seed's trained model compressed by one method at
one level, written in the format whose size the efficiency table measured
(:mod:`cxrprune.compression.artifacts`), with a sidecar ``<file>.json`` that says how to load
it, and checked against the study: the artifact's predictions of the test set are compared
with the prediction table the report was computed from.

Why a command and not a pipeline output: every (method, level) artifact of every seed would
be gigabytes at NIH scale, and a deployer wants one, chosen from the deployment report.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrprune.compression import predictions
from cxrprune.compression.methods import is_single_level, method_levels
from cxrprune.compression.methods.base import Context
from cxrprune.compression.methods.registry import get
from cxrprune.compression.predict import predict_probs
from cxrprune.core import catalog
from cxrprune.core.atomic import write_json
from cxrprune.core.checksums import file_digest
from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError
from cxrprune.core.numerics import autocast_option
from cxrprune.core.runtime import cache_on_device, pick_device
from cxrprune.datasets.prepare import load_meta, load_split, split_reader
from cxrprune.training.modelfile import load_checkpoint

# How to load each format (the sidecar's ``load``).
LOADERS = {
    "sparse": "cxrprune.compression.artifacts.load_sparse(path) -> the dense state dict; "
              "cxrprune.training.models.build_model(arch, n_classes, 'none', image_size).load_state_dict(it)",
    "state_dict": "torch.load(path, weights_only=True) -> the state dict; "
                  "cxrprune.training.models.build_model(arch, n_classes, 'none', image_size).load_state_dict(it)",
    "module": "torch.load(path, weights_only=False) -> the whole (smaller) torch module; only load files you made",
    "onnx": "onnxruntime.InferenceSession(path); input: float32 N x 3 x H x W, ImageNet-normalised; output: logits",
}


def export(params: Params, seed: int, method: str, level: float, out: Path) -> dict[str, Any]:
    """Write the artifact of ``seed``'s model under ``method`` at ``level`` to ``out`` and its
    sidecar ``out.json``; returns the sidecar. The level must be one the study ran (so its
    predictions exist to check against): one of ``prune.levels``, or 0 for a one-level method."""
    if method not in params.prune.methods:
        raise ConfigError(f"--method {method} is not in params.yaml prune.methods {params.prune.methods}: the study "
                          f"has no predictions to check its artifact against")
    levels = method_levels(method, params.prune.levels)
    match = [k for k in levels if predictions.same_level(k, level)]
    if not match:
        raise ConfigError(f"--level {level:g} is not a level the study ran for {method} ({', '.join(f'{k:g}' for k in levels)})")
    if seed not in params.seeds:
        raise ConfigError(f"--seed {seed} is not in params.yaml seeds {params.seeds}")
    out = Path(out)
    lay = params.layout
    classes = load_meta(lay.prepared)["classes"]
    labels, images = load_split(lay.prepared, "test", verify="full")
    table = predictions.read_predictions(params, seed, labels["image_id"].astype(str).tolist(), classes)
    model_path = lay.model_file(seed)
    model, _ = load_checkpoint(model_path)
    device = pick_device(params.train.device)
    x = torch.from_numpy(np.array(images))
    ctx = Context(seed, params.prune, params.train, device, int(x.shape[-1]), split_reader(lay.prepared, classes))
    model = model.to(device, memory_format=torch.channels_last).eval()
    chosen = get(method)
    chosen.check(model, [match[0]], ctx)
    compressed = chosen.compress(model, [match[0]], ctx)
    try:
        c = next(compressed)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written under its own name in a temporary folder, then moved: torch.save stores the
        # file's name inside the archive, so a temporary name would be kept in the file.
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
            c.save(Path(tmp) / out.name)
            os.replace(Path(tmp) / out.name, out)
        # as prune@<seed> predicted it: same batch size and numerics
        predict = c.predict if c.predict is not None else (
            lambda t: predict_probs(c.model, t, params.prune.batch_size, device,
                                    autocast=autocast_option(params.prune.autocast),
                                    allow_tf32=params.prune.allow_tf32))
        probs = np.asarray(predict(cache_on_device(x, device)), dtype=np.float32)
    finally:
        compressed.close()
    block = predictions.select_block(table, method, match[0])
    diff = float(np.max(np.abs(block[classes].to_numpy(np.float32) - probs)))
    form = catalog.METHODS[method].artifact_format
    sidecar = {
        "artifact": str(out), "bytes": out.stat().st_size, "md5": file_digest(out, 'md5'), "format": form,
        "load": LOADERS[form], "method": method, "level": match[0],
        "single_level_method": is_single_level(method), "measured_sparsity": c.measured_sparsity, "seed": seed,
        "source_model": str(model_path), "source_md5": file_digest(model_path, 'md5'), "arch": params.train.arch,
        "classes": classes, "image_size": int(x.shape[-1]), "input": "uint8 images / 255, 3 channels, ImageNet mean/std",
        "check": {"test_images": len(labels), "max_abs_probability_difference": diff,
                  "against": str(lay.predictions_file(seed)),
                  "what": "the artifact's test-set probabilities against the prediction table the report used "
                          "(0 on the machine that ran prune; ONNX Runtime and thread counts can differ in the last "
                          "digits elsewhere)"},
    }
    write_json(Path(f"{out}.json"), sidecar)
    return sidecar


def describe(sidecar: dict[str, Any]) -> str:
    """One line for the terminal."""
    return (f"{sidecar['artifact']}: {sidecar['method']} at {sidecar['level']:g} of seed {sidecar['seed']}, "
            f"{sidecar['bytes']:,} bytes ({sidecar['format']}); test-set probabilities within "
            f"{sidecar['check']['max_abs_probability_difference']:.2g} of the study's; how to load it: "
            f"{sidecar['artifact']}.json")

