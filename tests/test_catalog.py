"""The catalog (``cxrprune.core.catalog``) is the one list of methods, architectures and
sources: the README's "Adding a new method / architecture / source" is followed here for a
toy of each (one module in a plug-in package, one ``register_*`` call), and the toy runs
through prepare, train, prune and evaluate on tiny generated data."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrprune.analysis.evaluate import map_table, per_class_metrics
from cxrprune.compression.methods import method_levels
from cxrprune.compression.methods.base import Method
from cxrprune.compression.methods.registry import method_class
from cxrprune.compression.predictions import check_predictions, predictions_table
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core import catalog
from cxrprune.core.config import PruneConfig, SourceOptions, from_dict
from cxrprune.core.errors import ConfigError, CxrpruneError
from cxrprune.datasets import importer
from cxrprune.datasets.prepare import load_meta, load_split, prepare_dataset, split_reader
from cxrprune.datasets.sources import read_source
from cxrprune.training.loop import train_model
from cxrprune.training.modelfile import load_checkpoint, save_model
from cxrprune.training.models import build_model, head

SRC = Path(__file__).resolve().parents[1] / "src"

# The plug-in package: one module per extension, as the README describes.
TOY_METHOD = '''
"""toy_first_k: zeroes the first round(k * n) weights of every prunable layer (by position)."""
import torch

from cxrprune.compression.artifacts import save_sparse
from cxrprune.compression.masks import count_zeros, n_pruned
from cxrprune.compression.methods.base import Compressed, Method
from cxrprune.training.models import prunable_parameters


class FirstK(Method):
    name = "toy_first_k"

    def compress(self, model, levels, ctx):
        params = [getattr(m, name) for m, name in prunable_parameters(model)]
        dense = [p.detach().clone() for p in params]
        try:
            for level in sorted(levels):
                with torch.no_grad():
                    for p, d in zip(params, dense):
                        w = d.clone().reshape(-1)
                        w[:n_pruned(level, w.numel())] = 0.0
                        p.copy_(w.view(p.shape))
                measured = sum(count_zeros(p) for p in params) / sum(p.numel() for p in params)
                yield Compressed(float(level), measured, lambda path: save_sparse(model, path), model)
        finally:
            with torch.no_grad():
                for p, d in zip(params, dense):
                    p.copy_(d)
'''

TOY_ARCH = '''
"""toy_net: one strided convolution, global pooling and a Linear head ("fc")."""
from torch import nn


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x).relu()).flatten(1))


def build(arch, image_size):
    return ToyNet()
'''

TOY_SOURCE = '''
"""toy_source: <root>/toy.npz with images_{split} (N, S, S) uint8 and labels_{split} (N, C) 0/1."""
from pathlib import Path

import numpy as np
import pandas as pd

from cxrprune.datasets.sources import SPLITS, InMemoryArray, SourceData

CLASSES = ["a", "b", "c"]


def read_toy(root: Path, options=None) -> SourceData:
    path = Path(root) / "toy.npz"
    with np.load(path) as npz:
        arrays = {s: InMemoryArray(npz[f"images_{s}"], f"toy-{s}") for s in SPLITS}
        labels = {s: npz[f"labels_{s}"] for s in SPLITS}
    splits = {}
    for s in SPLITS:
        ids = [f"{s}-{i}" for i in range(len(labels[s]))]
        df = pd.DataFrame({"image_id": ids, "patient_id": ids, "path": [f"{path}:{i}" for i in ids]})
        splits[s] = pd.concat([df, pd.DataFrame(labels[s].astype(np.int8), columns=CLASSES)], axis=1)
    return SourceData(CLASSES, splits, dict.fromkeys(SPLITS, path), arrays=arrays)
'''

TOYS = (
    catalog.MethodSpec("toy_first_k", "cxrprune_toy.first_k:FirstK"),
    catalog.ArchSpec("toy_net", "cxrprune_toy.toy_net:build", head="fc"),
    catalog.SourceSpec("toy_source", "cxrprune_toy.toy_source:read_toy", options=frozenset()),
)


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """The plug-in package on sys.path and its three catalog entries registered (removed after)."""
    package = tmp_path / "plugins" / "cxrprune_toy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in (("first_k", TOY_METHOD), ("toy_net", TOY_ARCH), ("toy_source", TOY_SOURCE)):
        (package / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    catalog.register_method(TOYS[0])
    catalog.register_architecture(TOYS[1])
    catalog.register_source(TOYS[2])
    yield
    for spec in TOYS:
        catalog.unregister(spec.name)
    for name in [m for m in sys.modules if m.startswith("cxrprune_toy")]:
        del sys.modules[name]


def _write_toy_data(root: Path, per_split: int = 32, size: int = 24) -> None:
    """Three classes, each a bright quadrant of an otherwise noisy image, so one epoch learns something."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = (rng.random((per_split, 3)) < 0.4).astype(np.uint8)
        labels[:3] = np.eye(3, dtype=np.uint8)  # every class has positives in every split
        labels[3] = 0
        images = rng.integers(0, 80, (per_split, size, size), dtype=np.uint8)
        half = size // 2
        for c, (r, q) in enumerate(((0, 0), (0, 1), (1, 0))):
            images[labels[:, c] == 1, r * half:(r + 1) * half, q * half:(q + 1) * half] += 150
        arrays[f"images_{split}"], arrays[f"labels_{split}"] = images, labels
    root.mkdir(parents=True)
    np.savez(root / "toy.npz", **arrays)


def _params(root: Path, methods: list[str]):
    return from_dict({
        "seeds": [0],
        "data": {"name": "toy", "source": "toy_source", "root": str(root), "image_size": 32, "workers": 1},
        "train": {"arch": "toy_net", "epochs": 1, "patience": 1, "batch_size": 16, "threads": 1, "device": "cpu"},
        "prune": {"methods": methods, "levels": [0.0, 0.5, 0.9]},
        "analyze": {"pie_sparsity": 0.9},
    })


def test_unregistered_names_are_refused_with_the_catalog_names():
    with pytest.raises(ConfigError, match="train.arch must be one of resnet10, resnet18"):
        from_dict({"train": {"arch": "toy_net"}})
    with pytest.raises(ConfigError, match="prune.methods\\[1\\] must be one of l1, random, l1_layer"):
        from_dict({"prune": {"methods": ["l1", "toy_first_k"]}})
    with pytest.raises(ConfigError, match="data.source must be one of nih-cxr-lt, mimic-cxr-lt, csv, medmnist"):
        from_dict({"data": {"source": "toy_source"}})
    with pytest.raises(ValueError, match="already in the catalog"):
        catalog.register_method(catalog.MethodSpec("l1", "x:y"))
    with pytest.raises(ValueError, match="module:attribute"):
        catalog.register_source(catalog.SourceSpec("toy_bad", "no_colon"))


def test_toy_method_architecture_and_source_run_through_the_pipeline(toys, tmp_path):
    root = tmp_path / "raw"
    _write_toy_data(root)
    params = _params(root, ["l1", "toy_first_k"])  # the config accepts the registered names

    # prepare: read by the toy source; an option it does not read is refused
    with pytest.raises(ConfigError, match="data.options.classes does not apply to data.source toy_source"):
        read_source("toy_source", root, SourceOptions(classes=["a"]))
    prepared = tmp_path / "prepared"
    meta = prepare_dataset(params.data, prepared)
    assert meta["classes"] == ["a", "b", "c"] and meta["counts"] == {"train": 32, "val": 32, "test": 32}
    classes = load_meta(prepared)["classes"]
    (tl, ti), (vl, vi), (test_labels, test_images) = (load_split(prepared, s) for s in ("train", "val", "test"))

    # train, then rebuild from model.pt as the prune stage does
    result = train_model(params.train, 0, tl, ti, vl, vi, classes)
    assert np.isfinite(result.history["train_loss"]).all()
    save_model(tmp_path / "model.pt", result.model, arch="toy_net", classes=classes, image_size=32, epoch=0,
               val_loss=1.0, seed=0)
    model, _ = load_checkpoint(tmp_path / "model.pt")
    assert head(model, "toy_net").out_features == 3

    # prune: the dense reference (l1 at 0) and the toy method at every level
    from cxrprune.compression.methods.base import Context

    images = torch.from_numpy(np.array(test_images))
    ctx = Context(0, params.prune, params.train, torch.device("cpu"), 32, split_reader(prepared, classes))
    results = prune_and_predict(model, images, params.prune.methods, params.prune.levels, 0, 16,
                                torch.device("cpu"), context=ctx)
    assert [(r.method, r.sparsity) for r in results] == [(m, k) for m in ("l1", "toy_first_k")
                                                           for k in (0.0, 0.5, 0.9)]
    toy = {r.sparsity: r for r in results if r.method == "toy_first_k"}
    assert toy[0.0].measured_sparsity == 0.0 and 0.85 < toy[0.9].measured_sparsity <= 0.9
    dense = next(r for r in results if (r.method, r.sparsity) == catalog.DENSE_REFERENCE)
    np.testing.assert_array_equal(toy[0.0].probs, dense.probs)  # level 0 prunes nothing
    ids = test_labels["image_id"].tolist()
    table = predictions_table(results, ids, classes)
    check_predictions(table, "toy", ids, classes, params.prune.methods, params.prune.levels)

    # evaluate
    per_class = per_class_metrics(table, test_labels, classes, 0)
    maps = map_table(per_class)
    assert set(maps["method"]) == {"l1", "toy_first_k"} and np.isfinite(maps["map"]).all()
    assert method_levels("toy_first_k", [0.5, 0.0]) == [0.0, 0.5]


def test_builtin_entries_resolve_to_their_implementations():
    for name, spec in catalog.METHODS.items():
        cls = method_class(name)
        assert issubclass(cls, Method) and cls.name == name
        assert set(spec.options) <= {f for f in PruneConfig.__dataclass_fields__}, name
        assert spec.artifact_format in ("sparse", "state_dict", "module", "onnx"), name
    for name, spec in catalog.SOURCES.items():
        assert callable(catalog.load(spec.implementation)), name
        assert spec.options <= set(SourceOptions.__dataclass_fields__), name
    # the CLI's import-predictions --dataset choices are the datasets the importer reads
    assert {s.name for s in catalog.SOURCES.values() if s.published_predictions} == set(importer.DATASETS)
    for name, spec in catalog.ARCHITECTURES.items():
        assert callable(catalog.load(spec.implementation)), name
    # the cheap ones are built and have the head their entry names
    for name in ("resnet10", "resnet18", "vit_tiny"):
        assert head(build_model(name, 4, image_size=32), name).out_features == 4
    with pytest.raises(CxrpruneError, match="train.arch: unknown architecture 'nope'; choose one of resnet10"):
        build_model("nope", 4)


def test_the_dense_reference_is_l1_at_level_zero_and_the_config_requires_it():
    assert catalog.DENSE_REFERENCE == ("l1", 0.0)
    with pytest.raises(ConfigError, match="prune.methods must be a list that contains l1"):
        from_dict({"prune": {"methods": ["random"]}})
    with pytest.raises(ConfigError, match="prune.levels must be a list that contains 0"):
        from_dict({"prune": {"levels": [0.5, 0.9]}, "analyze": {"pie_sparsity": 0.9}})


def test_the_catalog_and_the_config_import_no_torch():
    code = "import sys, cxrprune.core.config, cxrprune.compression.methods; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})


def test_stage_deps_knows_every_module_that_loads_catalog_implementations():
    from stage_deps import CATALOG_LOADERS

    loaders = set()
    for path in (SRC / "cxrprune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "catalog"):
                loaders.add(".".join(path.relative_to(SRC).with_suffix("").parts))
    assert loaders == set(CATALOG_LOADERS)
