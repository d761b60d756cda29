"""Every architecture of train.arch: what is prunable, masks against torch.nn.utils.prune,
the image-size rules, and a tiny train -> prune -> predict run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from nih_layout import write_nih_dataset
from torch import nn
from torch.nn.utils import prune

from cxrprune.compression.masks import GlobalPruner, masks_for_levels, n_pruned
from cxrprune.compression.predictions import predictions_table
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core import catalog
from cxrprune.core.config import DataConfig, TrainConfig, from_dict
from cxrprune.core.errors import ConfigError
from cxrprune.datasets.prepare import load_meta, load_split, prepare_dataset
from cxrprune.training.loop import train_model
from cxrprune.training.modelfile import load_checkpoint, save_model
from cxrprune.training.models import build_model, head, prunable_parameters

NEW = ["densenet121", "efficientnet_b0", "vit_tiny"]
# 28M and 86M weights: torch's oracle and a training step take tens of seconds on a busy CPU.
HEAVY = ["convnext_tiny", "vit_b_16"]
LEVELS = [0.0, 0.3, 0.9]


def _model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 6, image_size=32).eval()


def test_the_config_accepts_every_catalog_architecture():
    for arch in catalog.architecture_names():
        assert from_dict({"train": {"arch": arch}}).train.arch == arch


@pytest.mark.parametrize("arch", NEW + HEAVY)
def test_prunable_set_is_every_matrix_weight_and_the_attention_projections(arch):
    model = _model(arch)
    ours = {id(getattr(m, name)) for m, name in prunable_parameters(model)}
    # Independently: every parameter of 2+ dimensions whose name ends in "weight" (conv
    # kernels, Linear matrices, MultiheadAttention.in_proj_weight); not norms, biases,
    # position embeddings, class tokens or ConvNeXt's layer scales.
    expected = {id(p) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2}
    assert ours == expected and len(ours) == len(prunable_parameters(model))
    if arch.startswith("vit"):
        attn = [m for m, name in prunable_parameters(model) if name == "in_proj_weight"]
        assert attn and all(isinstance(m, nn.MultiheadAttention) for m in attn)
    assert head(model, arch).out_features == 6


def _torch_masks(model: nn.Module, level: float) -> list[torch.Tensor]:
    m = copy.deepcopy(model)
    params = prunable_parameters(m)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=level)
    return [getattr(mod, f"{name}_mask").bool() for mod, name in params]


def _assert_same_masks_up_to_ties(model: nn.Module, ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    """Equal keep-masks, except where weights tie at the level's threshold magnitude: there
    ``topk`` (torch) keeps an arbitrary subset and ours the stable order's. Large models (ViT-B
    has 86M float32 weights) do have such ties; small ones usually do not, and then the masks
    must be identical."""
    assert len(ours) == len(ref) > 0
    a = torch.cat([m.reshape(-1) for m in ours])
    b = torch.cat([m.reshape(-1) for m in ref])
    assert int(a.sum()) == int(b.sum()), "a different number of weights kept"
    differ = a != b
    if differ.any():
        w = torch.cat([getattr(mod, name).detach().abs().reshape(-1) for mod, name in prunable_parameters(model)])
        threshold = w[~a].max()  # the largest pruned magnitude
        assert torch.all(w[differ] == threshold), "masks differ away from the threshold's ties"


# Not vit_b_16: its masks come from the same code over the same torchvision VisionTransformer as
# vit_tiny's (its prunable set is checked above), and torch's oracle over its 86M weights was the
# slowest unit test of the suite (44 s).
@pytest.mark.parametrize("arch", NEW + [pytest.param("convnext_tiny", marks=pytest.mark.slow)])
def test_masks_match_global_unstructured_and_sparsity_equals_request(arch):
    model = _model(arch)
    # The heavy models check one level against torch (each torch oracle is a full copy and
    # sort of the weights); the same code runs for every architecture.
    levels = [0.9] if arch in HEAVY else [0.3, 0.9]
    ours = masks_for_levels(model, levels)
    for level in levels:
        _assert_same_masks_up_to_ties(model, ours[level], _torch_masks(model, level))
    pruner = GlobalPruner(model)
    pruner.reset("l1")
    for level in (0.05, 0.5, 0.95):
        assert pruner.apply(level) == n_pruned(level, pruner.n) / pruner.n


@pytest.mark.parametrize("arch, size, ok", [
    ("vit_tiny", 48, True), ("vit_tiny", 52, False), ("vit_tiny", 24, False),
    ("vit_b_16", 64, True), ("vit_b_16", 56, False), ("densenet121", 32, True), ("convnext_tiny", 31, False),
])
def test_image_size_is_checked_per_architecture(arch, size, ok):
    raw = {"data": {"image_size": size}, "train": {"arch": arch}}
    if ok:
        from_dict(raw)
        return
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert "data.image_size" in str(err.value) and "\n" not in str(err.value)


def test_vit_b_16_with_imagenet_weights_needs_224_px():
    with pytest.raises(ConfigError, match="data.image_size must be 224 for vit_b_16 with ImageNet weights"):
        from_dict({"data": {"image_size": 64}, "train": {"arch": "vit_b_16", "pretrained": "imagenet"}})
    from_dict({"data": {"image_size": 224}, "train": {"arch": "vit_b_16", "pretrained": "imagenet"}})


def test_a_local_state_dict_loads_into_a_new_architecture(tmp_path):
    source = _model("efficientnet_b0", seed=1)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model("efficientnet_b0", 3, str(tmp_path / "w.pt"))
    sa, sb = model.state_dict(), source.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("classifier.1."))
    assert head(model, "efficientnet_b0").out_features == 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    write_nih_dataset(root / "raw", per_split=20, size=40)
    prepare_dataset(DataConfig(name="fixture", root=str(root / "raw"), image_size=32, workers=1), root / "prep")
    return {s: load_split(root / "prep", s) for s in ("train", "val", "test")}, load_meta(root / "prep")["classes"]


@pytest.mark.parametrize("arch", NEW + [pytest.param(a, marks=pytest.mark.slow) for a in HEAVY])
def test_trains_prunes_and_predicts_end_to_end(arch, data, tmp_path):
    splits, classes = data
    cfg = TrainConfig(arch=arch, epochs=1, patience=1, batch_size=10, threads=1, device="cpu")
    (tl, ti), (vl, vi), (test_labels, test_images) = splits["train"], splits["val"], splits["test"]
    result = train_model(cfg, 0, tl, ti, vl, vi, classes)
    assert np.isfinite(result.history["train_loss"]).all()
    save_model(tmp_path / "model.pt", result.model, arch=arch, classes=classes, image_size=32, epoch=0,
               val_loss=1.0, seed=0)
    model, _ = load_checkpoint(tmp_path / "model.pt")  # rebuilt from the file, as the prune stage does
    n = sum(getattr(m, name).numel() for m, name in prunable_parameters(model))
    results = prune_and_predict(model, torch.from_numpy(np.array(test_images)), ["l1", "random"], LEVELS, 0, 8,
                                torch.device("cpu"))
    assert [(r.method, r.sparsity) for r in results] == [(m, k) for m in ("l1", "random") for k in LEVELS]
    for r in results:
        assert r.measured_sparsity == n_pruned(r.sparsity, n) / n
        assert np.isfinite(r.probs).all() and ((r.probs >= 0) & (r.probs <= 1)).all()
    table = predictions_table(results, test_labels["image_id"].tolist(), classes)
    assert len(table) == len(test_labels) * 2 * len(LEVELS)
    dense, sparse = (np.asarray(r.probs) for r in results[:3:2])
    assert not np.array_equal(dense, sparse)  # 90% pruning changes the predictions
