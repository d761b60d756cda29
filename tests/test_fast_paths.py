"""The fast paths against the authors' approach and against straightforward references.

- prune + predict: ``prune_and_predict`` (one pruner, in-place zeroing, uint8 cache,
  channels-last, inference_mode) vs a fresh model per level pruned by
  ``torch.nn.utils.prune.global_unstructured(L1Unstructured)`` with its hooks on, fed
  ToTensor + Normalize inputs: probabilities equal to 1e-5.
- masks: the in-place threshold pruning equals the first ``round(k n)`` entries of a stable
  sort of |w| (ties included, channels-last parameters included) and the random method the
  first entries of the seeded permutation, as the index-based implementation did.
- training input: batch augmentation equals the same transform applied image by image;
  flip-only is an exact horizontal flip; rotation 0 without flip is the identity; a seed
  fixes the batch; ``train_epoch`` gives bit-identical loss and weights to the plain loop.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mask_helpers import tensors_equal
from torch import nn
from torch.nn.utils import prune as tprune

from cxrprune.compression.masks import GlobalPruner, n_pruned
from cxrprune.compression.methods.random import RANDOM_PRUNE_SEED_OFFSET
from cxrprune.compression.predict import predict_probs
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.config import TrainConfig
from cxrprune.training.augment import augment, normalize, to_unit
from cxrprune.training.loop import train_epoch
from cxrprune.training.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    prunable_parameters,
)

CPU = torch.device("cpu")
LEVELS = [0.0, 0.2, 0.45, 0.7, 0.95]



@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second intra-op thread only adds barrier waits (badly so on a
    shared, oversubscribed machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n=6, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size), dtype=torch.uint8, generator=g)


def _model(seed=0, images=None, classes=5) -> nn.Module:
    """resnet10 with BatchNorm statistics taken from ``images`` (unsaturated outputs)."""
    torch.manual_seed(seed)
    model = build_model("resnet10", classes)
    if images is not None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
        model.train()
        with torch.no_grad():
            model(normalize(to_unit(images, CPU)))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()


def _small_net(seed=0) -> nn.Module:
    """Conv2d and Linear layers (~60k weights): the pruner's logic at test speed."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.Conv2d(64, 64, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _authors_inputs(images: torch.Tensor) -> torch.Tensor:
    """ToTensor + Normalize of each grayscale image replicated to 3 channels, NCHW."""
    x = images.unsqueeze(1).expand(-1, 3, -1, -1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.sub(mean).div(std)


def _authors_probs(model: nn.Module, images: torch.Tensor, level: float) -> np.ndarray:
    fresh = build_model("resnet10", model.fc.out_features)
    fresh.load_state_dict(model.state_dict())
    if level > 0:
        tprune.global_unstructured(prunable_parameters(fresh), pruning_method=tprune.L1Unstructured, amount=level)
    fresh.eval()
    with torch.no_grad():
        return torch.sigmoid(fresh(_authors_inputs(images))).numpy()


def _stable_order_keep(order: torch.Tensor, target: int) -> torch.Tensor:
    """The index-based reference: keep-mask after pruning the first ``target`` entries of
    ``order = torch.sort(|w|, stable=True).indices``."""
    keep = torch.ones(order.numel(), dtype=torch.bool)
    keep[order[:target]] = False
    return keep


# --- prune + predict -----------------------------------------------------------------

def test_prune_and_predict_equals_authors_approach():
    images = _images()
    model = _model(images=images)
    ours = prune_and_predict(copy.deepcopy(model), images, ["l1"], LEVELS, seed=0, batch_size=4, device=CPU)
    assert [r.sparsity for r in ours] == LEVELS
    spread = []
    for res in ours:
        ref = _authors_probs(model, images, res.sparsity)
        np.testing.assert_allclose(res.probs, ref, rtol=0, atol=1e-5)
        assert res.probs.dtype == np.float32
        assert res.measured_sparsity == pytest.approx(res.sparsity, abs=1e-4)
        spread.append(res.probs.std())
    assert min(spread) > 1e-3, "the probabilities are degenerate; the comparison would prove nothing"


def test_predict_probs_batches_and_precision_options():
    images = _images(n=7)
    model = _model(images=images).to(memory_format=torch.channels_last)
    whole = predict_probs(model, images, 7, CPU)
    # A ragged last batch (of 1) may pick another oneDNN kernel: equal to rounding.
    np.testing.assert_allclose(predict_probs(model, images, 3, CPU), whole, rtol=0, atol=1e-6)
    bf16 = predict_probs(model, images, 7, CPU, autocast="bf16")
    assert bf16.dtype == np.float32 and np.abs(bf16 - whole).max() < 0.05
    with pytest.raises(ValueError, match="autocast"):
        predict_probs(model, images, 7, CPU, autocast="int8")


# --- masks ---------------------------------------------------------------------------

@pytest.mark.parametrize("channels_last", [False, True])
def test_inplace_l1_equals_stable_sort_with_ties(channels_last):
    model = _small_net()
    with torch.no_grad():
        for m, _ in prunable_parameters(model):
            m.weight.copy_(torch.sign(m.weight) * (torch.floor(m.weight.abs() * 200) + 1) / 200)  # ties, no 0
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    pruner = GlobalPruner(model)
    dense = pruner.original.clone()
    order = torch.sort(dense.abs(), stable=True).indices
    pruner.reset("l1")
    partial_ties = 0
    for level in [0.0, 0.1, 0.33, 0.5, 0.77, 0.9, 0.99]:
        measured = pruner.apply(level)
        target = n_pruned(level, pruner.n)
        ref_keep = _stable_order_keep(order, target)
        ours_keep = torch.cat([p.detach().reshape(-1) != 0 for p in pruner.params])
        assert torch.equal(ours_keep, ref_keep), level
        assert measured == target / pruner.n
        assert tensors_equal([m.reshape(-1) for m in pruner.keep_masks()], torch.split(ref_keep, pruner.sizes))
        kept = torch.cat([p.detach().reshape(-1) for p in pruner.params])
        assert torch.equal(kept[ref_keep], dense[ref_keep]), "kept weights must be bit-identical"
        if target:
            v = dense.abs()[~ref_keep].max()
            partial_ties += int(bool(((dense.abs() == v) & ref_keep).any()))
    assert partial_ties >= 3, "the test must exercise thresholds where only some tied weights go"


def test_random_method_equals_the_seeded_permutation():
    model = _small_net()
    pruner = GlobalPruner(model)
    dense = pruner.original.clone()
    pruner.reset("random", torch.Generator().manual_seed(5 + RANDOM_PRUNE_SEED_OFFSET))
    # Weight i's rank is the i-th entry of the seeded permutation (a uniformly random ranking):
    # level k prunes exactly the weights ranked below round(k * n).
    rank = torch.randperm(pruner.n, generator=torch.Generator().manual_seed(5 + RANDOM_PRUNE_SEED_OFFSET),
                          dtype=torch.int32)
    for level in [0.1, 0.5, 0.9]:
        pruner.apply(level)
        keep = rank >= n_pruned(level, pruner.n)
        assert int((~keep).sum()) == n_pruned(level, pruner.n)
        flat = torch.cat([p.detach().reshape(-1) for p in pruner.params])
        assert torch.equal(flat, torch.where(keep, dense, torch.zeros(())))


def test_pruner_restores_and_reprunes_identically():
    model = _small_net().to(memory_format=torch.channels_last)
    pruner = GlobalPruner(model)
    pruner.reset("l1")
    pruner.apply(0.6)
    first = [p.detach().clone() for p in pruner.params]
    pruner.reset("random", torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in pruner.params]), pruner.original)
    pruner.reset("l1")
    pruner.apply(0.6)
    assert tensors_equal(first, pruner.params)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in pruner.params if p.dim() == 4)


# --- training input ------------------------------------------------------------------

def _draws(b: int, rotation: float, hflip: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(b, generator=g) * 2 - 1) * math.radians(rotation)
    flips = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    return angles, flips


def _per_image_reference(x: torch.Tensor, rotation: float, hflip: bool, seed: int) -> torch.Tensor:
    """The same affine transform, one image at a time."""
    angles, flips = _draws(x.shape[0], rotation, hflip, seed)
    out = []
    for i in range(x.shape[0]):
        a, f, zero = angles[i:i + 1], flips[i:i + 1], torch.zeros(1)
        theta = torch.stack([torch.stack([torch.cos(a) * f, -torch.sin(a), zero], dim=1),
                             torch.stack([torch.sin(a) * f, torch.cos(a), zero], dim=1)], dim=1)
        grid = F.affine_grid(theta, [1, *x.shape[1:]], align_corners=False)
        out.append(F.grid_sample(x[i:i + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    return torch.cat(out)


def _unit_batch(n=6, size=24, seed=0) -> torch.Tensor:
    return to_unit(_images(n, size, seed), CPU)


def test_batch_augmentation_equals_per_image_reference():
    x = _unit_batch()
    ours = augment(x, 15.0, True, torch.Generator().manual_seed(3))
    assert torch.equal(ours, _per_image_reference(x, 15.0, True, 3))


def test_flip_only_is_an_exact_horizontal_flip():
    x = _unit_batch(n=16)
    out = augment(x, 0.0, True, torch.Generator().manual_seed(7))
    _, flips = _draws(16, 0.0, True, 7)
    assert 0 < int((flips < 0).sum()) < 16
    for i in range(16):
        expected = x[i].flip(-1) if flips[i] < 0 else x[i]
        assert torch.equal(out[i], expected), i


def test_no_rotation_no_flip_is_identity_and_seed_fixes_the_batch():
    x = _unit_batch()
    assert torch.equal(augment(x, 0.0, False, torch.Generator().manual_seed(0)), x)
    a = augment(x, 15.0, True, torch.Generator().manual_seed(11))
    b = augment(x, 15.0, True, torch.Generator().manual_seed(11))
    c = augment(x, 15.0, True, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalize_is_per_image_imagenet_normalisation_channels_last():
    x = _unit_batch()
    out = normalize(x)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape == (6, 3, 24, 24)
    for i in range(x.shape[0]):
        assert torch.equal(out[i], (x[i].expand(3, -1, -1) - mean) / std)


def test_train_epoch_equals_the_plain_loop():
    """Loss (float64 accumulation on the device) and weights bit-identical to the loop that
    sums ``float(loss) * n`` in Python, with the same augmentation stream."""
    images = _images(n=10, size=16)
    y = (torch.rand(10, 5, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    cfg = TrainConfig(arch="resnet10", batch_size=4, rotation=15.0, hflip=True)
    loss_fn = nn.BCEWithLogitsLoss()

    def setup():
        torch.manual_seed(0)
        m = build_model("resnet10", 5).to(memory_format=torch.channels_last)
        return m, torch.optim.Adam(m.parameters(), lr=1e-3), torch.Generator().manual_seed(4)

    model, opt, gen = setup()
    ours = train_epoch(model, opt, loss_fn, images, y, cfg, gen, CPU)

    ref_model, ref_opt, g = setup()
    ref_model.train()
    perm = torch.randperm(10, generator=g)
    total, seen = 0.0, 0
    for start in range(0, 10, 4):
        idx = perm[start:start + 4]
        x = images[idx].unsqueeze(1).float().div(255.0)
        x = augment(x, 15.0, True, g)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        inputs = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        ref_opt.zero_grad(set_to_none=True)
        loss = loss_fn(ref_model(inputs), y[idx])
        loss.backward()
        ref_opt.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    assert ours == total / seen
    assert tensors_equal(model.state_dict().values(), ref_model.state_dict().values())
