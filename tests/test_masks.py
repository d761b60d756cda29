"""Nested global magnitude masks against torch.nn.utils.prune.global_unstructured."""

import copy

import pytest
import torch
from mask_helpers import tensors_equal
from torch import nn
from torch.nn.utils import prune

from cxrprune.compression.masks import GlobalPruner, masks_for_levels, n_pruned
from cxrprune.training.models import build_model, prunable_parameters

LEVELS = [0.0, 0.05, 0.3, 0.5, 0.65, 0.9, 0.95]



def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet10", 7).eval()


def _torch_masks(model, level, method=prune.L1Unstructured):
    m = copy.deepcopy(model)
    params = prunable_parameters(m)
    prune.global_unstructured(params, pruning_method=method, amount=level)
    return [mod.weight_mask.bool() for mod, _ in params]


@pytest.mark.parametrize("level", LEVELS)
def test_l1_masks_match_global_unstructured(level):
    model = _model()
    ours = masks_for_levels(model, [level])[level]
    ref = _torch_masks(model, level)
    # Continuous random weights have no ties at the threshold: the sets must be identical.
    assert tensors_equal(ours, ref)


def test_ties_at_threshold_differ_only_among_tied_weights():
    model = _model()
    with torch.no_grad():
        for m, _ in prunable_parameters(model):
            m.weight.copy_(torch.round(m.weight * 20) / 20)  # many exact ties
    level = 0.5
    ours = torch.cat([m.flatten() for m in masks_for_levels(model, [level])[level]])
    ref = torch.cat([m.flatten() for m in _torch_masks(model, level)])
    w = torch.cat([m.weight.detach().abs().flatten() for m, _ in prunable_parameters(model)])
    assert int((~ours).sum()) == int((~ref).sum())
    differ = ours != ref
    if differ.any():
        threshold = w[~ref].max()
        assert torch.all(w[differ] == threshold)


def test_levels_are_nested_and_measured_sparsity_equals_request():
    model = _model()
    pruner = GlobalPruner(model)
    pruner.reset("l1")
    previous = torch.ones(pruner.n, dtype=torch.bool)
    for level in LEVELS:
        measured = pruner.apply(level)
        keep = torch.cat([p.detach().flatten() != 0 for p in pruner.params])
        assert measured == pytest.approx(n_pruned(level, pruner.n) / pruner.n, abs=0)
        assert measured == pytest.approx(level, abs=1 / pruner.n)
        assert not torch.any(keep & ~previous), "a weight pruned at a lower level came back"
        previous = keep


def test_pruned_model_equals_torch_pruned_model_outputs():
    model = _model()
    x = torch.randn(4, 3, 32, 32)
    ref_model = copy.deepcopy(model)
    prune.global_unstructured(prunable_parameters(ref_model), pruning_method=prune.L1Unstructured, amount=0.7)
    pruner = GlobalPruner(model)
    pruner.reset("l1")
    pruner.apply(0.7)
    with torch.no_grad():
        assert torch.allclose(model(x), ref_model(x), atol=1e-6)


def test_reset_restores_dense_weights_and_biases_are_untouched():
    model = _model()
    dense = copy.deepcopy(model.state_dict())
    pruner = GlobalPruner(model)
    pruner.reset("l1")
    pruner.apply(0.9)
    for name, value in model.state_dict().items():
        if not name.endswith("weight") or "bn" in name or "downsample.1" in name:
            assert torch.equal(value, dense[name]), name
    pruner.reset("random", torch.Generator().manual_seed(1))
    assert all(torch.equal(v, dense[k]) for k, v in model.state_dict().items())


def test_random_method_is_seeded_and_hits_the_level():
    model = _model()
    a = masks_for_levels(model, [0.4], "random", torch.Generator().manual_seed(3))[0.4]
    b = masks_for_levels(model, [0.4], "random", torch.Generator().manual_seed(3))[0.4]
    c = masks_for_levels(model, [0.4], "random", torch.Generator().manual_seed(4))[0.4]
    assert tensors_equal(a, b)
    assert not tensors_equal(a, c)
    flat = torch.cat([m.flatten() for m in a])
    assert int((~flat).sum()) == n_pruned(0.4, flat.numel())


def test_decreasing_levels_are_refused():
    pruner = GlobalPruner(nn.Sequential(nn.Linear(4, 4)))
    pruner.reset("l1")
    pruner.apply(0.5)
    with pytest.raises(ValueError, match="levels must increase"):
        pruner.apply(0.25)


def test_channels_last_model_is_pruned_in_logical_order():
    model = _model().to(memory_format=torch.channels_last)
    ref = _torch_masks(_model(), 0.6)
    pruner = GlobalPruner(model)
    pruner.reset("l1")
    pruner.apply(0.6)
    ours = [p.detach() != 0 for p in pruner.params]
    assert tensors_equal(ours, ref)
