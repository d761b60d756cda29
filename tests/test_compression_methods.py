"""The compression methods beyond global L1 (issue 10, half A): each against an independent
oracle (torch.nn.utils.prune, the dense network with channels zeroed, the fp32 model, the
file on disk), their efficiency measured on the artifact, the prediction-table contract with
every method, and the bad inputs refused before any work."""

from __future__ import annotations

import copy
import sys

import numpy as np
import onnx
import pytest
import torch
from mask_helpers import tensors_equal
from sklearn.metrics import average_precision_score
from torch import nn
from torch.nn.utils import prune as torch_prune
from torchvision.models.resnet import BasicBlock

from cxrprune.compression.artifacts import count_nonzero_params, load_sparse
from cxrprune.compression.efficiency import COLUMNS, efficiency_table
from cxrprune.compression.methods import method_levels
from cxrprune.compression.methods.base import Context
from cxrprune.compression.methods.registry import get
from cxrprune.compression.predict import predict_probs
from cxrprune.compression.predictions import check_predictions, predictions_table
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core import catalog
from cxrprune.core.config import PruneConfig, TrainConfig, from_dict
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.training.models import prunable_parameters

S = 32  # image size
C = 6  # classes
LEVELS = [0.0, 0.3, 0.6, 0.9]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the prune stage's timing uses: the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyResNet(nn.Module):
    """A small ResNet (torchvision's BasicBlock, a residual stage with a downsampling
    shortcut, BatchNorm everywhere): the same dependency structure as the study's ResNets at
    a size that keeps these tests to seconds on a shared CPU."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(width, width)
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, 2, bias=False), nn.BatchNorm2d(2 * width))
        self.layer2 = BasicBlock(width, 2 * width, stride=2, downsample=down)
        self.layer3 = BasicBlock(2 * width, 2 * width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, C)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _model(seed: int = 0) -> nn.Module:
    """A TinyResNet with BatchNorm statistics that are not the identity (as after training),
    so that every channel is distinguishable and zeroing one changes the output."""
    torch.manual_seed(seed)
    model = TinyResNet().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


def _data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(0, 256, (n, S, S), dtype=np.uint8), (rng.random((n, C)) < 0.3).astype(np.float32))
            for split, n in (("train", 48), ("val", 24))}


def _context(seed: int = 0, **prune) -> Context:
    data = _data(seed)
    cfg = PruneConfig(**{"calibration_images": 16, **prune})
    return Context(seed, cfg, TrainConfig(batch_size=16, threads=1), CPU, S, lambda split: data[split])


def _images(n: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, S, S), dtype=np.uint8))


def _levels_of(method: str, model: nn.Module, levels, ctx) -> list:
    m = get(method)
    m.check(model, m.levels(levels), ctx)
    return m, m.levels(levels)


# --- levels ---------------------------------------------------------------------------

def test_method_levels_one_level_for_quantisation_and_casting():
    assert set(catalog.method_names()) == {"l1", "random", "l1_layer", "channel", "int8", "fp16", "bf16", "l1_finetune"}
    for m in ("int8", "fp16", "bf16"):
        assert method_levels(m, [0.5, 0.0, 0.9]) == [0.0]
        assert get(m).levels([0.5, 0.0]) == [0.0]
    for m in ("l1", "random", "l1_layer", "channel", "l1_finetune"):
        assert method_levels(m, [0.5, 0.0, 0.9]) == [0.0, 0.5, 0.9]
    with pytest.raises(ValueError, match="unknown compression method 'l2'"):
        method_levels("l2", [0.0])


# --- l1_layer ---------------------------------------------------------------------------

def test_l1_layer_masks_match_torch_l1_unstructured_per_layer():
    model = _model()
    dense = copy.deepcopy(model)
    for c in get("l1_layer").compress(model, LEVELS, _context()):
        ref = copy.deepcopy(dense)
        for m, _ in prunable_parameters(ref):
            torch_prune.l1_unstructured(m, "weight", amount=c.level)
        ref_masks = [m.weight_mask.bool() for m, _ in prunable_parameters(ref)]
        ours = [m.weight.detach() != 0 for m, _ in prunable_parameters(c.model)]
        assert tensors_equal(ours, ref_masks), f"level {c.level}"
        # every layer at the same fraction (global l1 would not)
        for w in ours:
            assert abs(1 - w.float().mean().item() - c.level) <= 1.0 / w.numel() + 1e-9
    assert tensors_equal([p for p in model.state_dict().values()], [p for p in dense.state_dict().values()])


# --- random -----------------------------------------------------------------------------

def _random_masks(mode: str, seed: int = 0) -> dict[float, torch.Tensor]:
    model = _model()
    out = {}
    for c in get("random").compress(model, LEVELS, _context(seed, random_masks=mode)):
        out[c.level] = torch.cat([m.weight.detach().flatten() != 0 for m, _ in prunable_parameters(c.model)])
        n = out[c.level].numel()
        assert int((~out[c.level]).sum()) == round(c.level * n)  # exactly round(k n) pruned, as l1
        assert c.measured_sparsity == pytest.approx(round(c.level * n) / n)
    return out


def test_random_independent_masks_are_drawn_per_level_and_nested_ones_nest():
    independent, nested = _random_masks("independent"), _random_masks("nested")
    assert bool(torch.all(nested[0.3] >= nested[0.6])) and bool(torch.all(nested[0.6] >= nested[0.9]))
    # independent: the weights pruned at 0.3 are not a subset of those pruned at 0.6
    assert not bool(torch.all(independent[0.3] >= independent[0.6]))
    # overlap of two independent draws is what chance predicts: 0.3 * 0.6 of the weights
    both = float((~independent[0.3] & ~independent[0.6]).float().mean())
    assert both == pytest.approx(0.3 * 0.6, abs=0.01)
    again = _random_masks("independent")
    assert tensors_equal(list(independent.values()), list(again.values()))  # seeded
    other = _random_masks("independent", seed=1)
    assert not torch.equal(other[0.6], independent[0.6])


# --- channel ----------------------------------------------------------------------------

def _zeroed_reference(dense: nn.Module, pruned: nn.Module) -> nn.Module:
    """The dense network with the channels that ``pruned`` lacks zeroed: each BatchNorm's
    removed channels found by their running means (distinct floats) and given weight = bias
    = 0, so they output exactly 0; a channel zero in every branch of a residual sum is zero
    after it, so the next layers read nothing from it, as if it were removed."""
    ref = copy.deepcopy(dense)
    bns = dict(ref.named_modules())
    for name, bn in pruned.named_modules():
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        full = bns[name]
        kept = [int(np.flatnonzero(full.running_mean.numpy() == v)[0]) for v in bn.running_mean.numpy()]
        assert len(set(kept)) == len(kept)
        # the kept channels carry the dense model's parameters unchanged
        assert torch.equal(full.weight.detach()[kept], bn.weight.detach())
        removed = sorted(set(range(full.num_features)) - set(kept))
        with torch.no_grad():
            full.weight[removed] = 0.0
            full.bias[removed] = 0.0
    return ref


def test_channel_model_is_smaller_and_equals_the_dense_network_with_channels_zeroed():
    model = _model()
    dense = copy.deepcopy(model)
    images = _images()
    method, levels = _levels_of("channel", model, LEVELS, _context())
    n_dense = sum(p.numel() for p in dense.parameters())
    seen = 0
    for c in method.compress(model, levels, _context()):
        n = sum(p.numel() for p in c.model.parameters())
        assert c.measured_sparsity == pytest.approx(1 - n / n_dense)
        # a channel of this small network holds ~1% of its parameters
        assert abs(c.measured_sparsity - c.level) < 0.03, (c.level, c.measured_sparsity)
        if c.level == 0:
            assert n == n_dense
            continue
        seen += 1
        # physically smaller: fewer channels in some convolutions, none with more
        convs = [(a.out_channels, b.out_channels) for a, b in zip(c.model.modules(), dense.modules())
                 if isinstance(a, nn.Conv2d)]
        assert n < n_dense and all(x <= y for x, y in convs) and any(x < y for x, y in convs)
        assert count_nonzero_params(c.model) < count_nonzero_params(dense)
        ours = predict_probs(c.model, images, 8, CPU)
        ref = predict_probs(_zeroed_reference(dense, c.model), images, 8, CPU)
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
        # and not trivially: the pruned model's outputs differ from the dense one's
        assert np.abs(ours - predict_probs(dense, images, 8, CPU)).max() > 1e-3
    assert seen == 3
    assert tensors_equal(list(model.state_dict().values()), list(dense.state_dict().values()))


def test_channel_refuses_a_level_it_cannot_reach_and_a_graph_it_cannot_trace():
    model = _model()
    with pytest.raises(ConfigError, match=r"prune.levels: channel pruning .* removes at most"):
        get("channel").check(model, [0.0, 0.9999], _context())

    class OneChannelNet(nn.Module):  # takes 1-channel images: tracing with the 3-channel example fails
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4, C)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(ConfigError, match="prune.methods: torch-pruning cannot trace this OneChannelNet"):
        get("channel").check(OneChannelNet(), [0.0, 0.5], _context())


# --- int8 -------------------------------------------------------------------------------

def test_int8_runs_in_onnxruntime_close_to_fp32_and_the_map_change_is_reported(tmp_path, capsys):
    model = _model()
    images = _images(64)
    fp32 = predict_probs(model, images, 16, CPU)
    (c,) = list(get("int8").compress(model, [0.0, 0.5], _context()))
    assert c.level == 0.0 and c.model is None and c.engine == "onnxruntime"
    q = c.predict(images)
    assert q.shape == fp32.shape and q.dtype == np.float32
    # pseudo-labels from the fp32 model: its mAP on them is 1 by construction, int8's shows
    # how much of the fp32 ranking survives quantisation
    y = (fp32 > np.median(fp32, axis=0)).astype(int)
    map_fp32 = np.mean([average_precision_score(y[:, j], fp32[:, j]) for j in range(C)])
    map_int8 = np.mean([average_precision_score(y[:, j], q[:, j]) for j in range(C)])
    with capsys.disabled():
        print(f"\nint8 vs fp32: max |dp| {np.abs(q - fp32).max():.4f}, mAP {map_fp32:.4f} -> {map_int8:.4f} "
              f"(change {map_int8 - map_fp32:+.4f})")
    assert np.abs(q - fp32).max() < 0.1 and map_int8 > 0.8
    assert np.abs(q - fp32).max() > 0  # quantised, not the fp32 graph
    # the artifact: a QDQ model with per-channel int8 weights
    path = tmp_path / "int8.onnx"
    c.save(path)
    graph = onnx.load(str(path)).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    conv_scales = [t for t in graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1 and t.dims[0] > 1]
    assert conv_scales, "per-channel weight scales"
    # the calibration sample is seeded: the same seed gives the same int8 model
    (again,) = list(get("int8").compress(_model(), [0.0], _context()))
    np.testing.assert_array_equal(again.predict(images), q)


def test_fp16_bf16_predict_in_that_dtype_and_store_half_the_bytes(tmp_path):
    model = _model()
    images = _images()
    fp32 = predict_probs(model, images, 16, CPU)
    from cxrprune.compression.efficiency import artifact_bytes
    dense_bytes = artifact_bytes(next(iter(get("l1").compress(model, [0.0], _context()))))
    for name, tol in (("fp16", 5e-3), ("bf16", 5e-2)):
        (c,) = list(get(name).compress(model, [0.0], _context()))
        p = c.predict(images)
        assert 0 < np.abs(p - fp32).max() < tol
        assert artifact_bytes(c) < 0.6 * dense_bytes


# --- l1_finetune ------------------------------------------------------------------------

def test_finetuning_keeps_pruned_weights_at_zero_and_trains_the_rest():
    model = _model()
    dense = copy.deepcopy(model)
    l1 = {c.level: [m.weight.detach().clone() for m, _ in prunable_parameters(c.model)]
          for c in get("l1").compress(copy.deepcopy(model), LEVELS, _context())}
    for c in get("l1_finetune").compress(model, LEVELS, _context(finetune_epochs=1)):
        ours = [m.weight.detach() for m, _ in prunable_parameters(c.model)]
        for w, ref in zip(ours, l1[c.level], strict=True):
            assert torch.equal(w == 0, ref == 0) or c.level == 0  # the same mask as l1
            assert bool(torch.all(w[ref == 0] == 0))  # pruned weights stay exactly zero
        assert c.measured_sparsity == pytest.approx(c.level, abs=1e-6)
        changed = any(not torch.equal(w, ref) for w, ref in zip(ours, l1[c.level]))
        assert changed == (c.level > 0)  # level 0 is the dense model, not fine-tuned
    assert tensors_equal(list(model.state_dict().values()), list(dense.state_dict().values()))


# --- efficiency -------------------------------------------------------------------------

def test_efficiency_is_measured_on_the_artifact_not_derived_from_the_level():
    model = _model()
    with torch.no_grad():  # 40% of every weight already exactly zero: a level-derived count would be wrong
        for m, _ in prunable_parameters(model):
            m.weight[torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(3)) < 0.4] = 0.0
    eff: list[dict] = []
    images = _images(8)
    prune_and_predict(model, images, ["l1", "channel", "int8"], [0.0, 0.2, 0.6], 0, 8, CPU, context=_context(),
                      efficiency=eff, timed=True)
    table = efficiency_table(eff)
    assert list(table.columns) == COLUMNS
    assert table["method"].tolist() == ["dense", "l1", "l1", "l1", "channel", "channel", "channel", "int8"]
    weights = sum(m.weight.numel() for m, _ in prunable_parameters(model))
    total = sum(p.numel() for p in model.parameters())
    row = table[(table["method"] == "l1") & (table["level"] == 0.2)].iloc[0]
    # 0.2 < the 0.4 already zero: l1 at 0.2 prunes only zeros, so the non-zeros are ~0.6 of the weights
    nonzero_weights = int(row["nonzero_params"]) - (total - weights)
    assert abs(nonzero_weights / weights - 0.6) < 0.02, row
    dense = table[table["method"] == "dense"].iloc[0]
    assert dense["bytes"] > 4 * total  # fp32 state dict
    assert row["bytes"] < 0.75 * dense["bytes"]  # bitmask-sparse file of 60% non-zeros
    l1_06 = table[(table["method"] == "l1") & (table["level"] == 0.6)].iloc[0]
    assert l1_06["bytes"] < row["bytes"]
    ch = table[table["method"] == "channel"]
    assert ch["bytes"].is_monotonic_decreasing and ch["nonzero_params"].is_monotonic_decreasing
    int8 = table[table["method"] == "int8"].iloc[0]
    assert int8["engine"] == "onnxruntime-cpu" and int8["bytes"] < 0.4 * dense["bytes"]
    assert (table["threads"] == 1).all()
    assert (table["latency_ms_b1"] > 0).all() and (table["images_per_s_b64"] > 0).all()
    # latency relative to the dense model, timed interleaved: a median ratio inside its sign-test interval
    timed = table[table["method"] != "dense"]
    assert (timed["latency_ratio_lo"] <= timed["latency_ratio"]).all()
    assert (timed["latency_ratio"] <= timed["latency_ratio_hi"]).all() and (timed["latency_ratio_lo"] > 0).all()
    assert (table.loc[table["method"] == "dense", ["latency_ratio", "latency_ratio_lo", "latency_ratio_hi"]] == 1.0
            ).all(axis=None)
    # an untimed seed: sizes yes, no latency
    eff2: list[dict] = []
    prune_and_predict(model, images, ["l1"], [0.0, 0.5], 1, 8, CPU, context=_context(1), efficiency=eff2)
    t2 = efficiency_table(eff2)
    assert t2["latency_ms_b1"].isna().all() and t2["latency_ratio"].isna().all() and (t2["bytes"] > 0).all()


def test_paired_runs_alternate_which_model_goes_first():
    """Interleaved timing: the dense reference first in even rounds, the compressed model
    first in odd ones, one warm-up of each before any timed run."""
    from cxrprune.compression.efficiency import paired_runs

    calls: list[str] = []
    a, b = paired_runs(lambda: calls.append("c"), lambda: calls.append("d"), 4, lambda: None)
    assert calls == ["d", "c", "d", "c", "c", "d", "d", "c", "c", "d"]
    assert a.shape == b.shape == (4,) and (a >= 0).all() and (b >= 0).all()


def test_sparse_artifact_restores_the_weights_exactly(tmp_path):
    model = _model()
    for c in get("l1").compress(model, [0.0, 0.7], _context()):
        c.save(tmp_path / "m")
        state = load_sparse(tmp_path / "m")
        assert tensors_equal([state[k] for k in c.model.state_dict()],
                             [v.contiguous() for v in c.model.state_dict().values()])


# --- the prune stage's function and the contract ----------------------------------------

def test_every_method_runs_through_prune_and_the_contract_check():
    model = _model()
    images = _images(12)
    ids = [f"img{i}" for i in range(12)]
    classes = [f"c{j}" for j in range(C)]
    methods = list(catalog.method_names())
    results = prune_and_predict(model, images, methods, LEVELS, 0, 8, CPU, context=_context())
    assert [(r.method, r.sparsity) for r in results] == [(m, k) for m in methods for k in method_levels(m, LEVELS)]
    table = predictions_table(results, ids, classes)
    check_predictions(table, "t", ids, classes, methods, LEVELS)
    # every pruning method's level-0 block is the dense model
    dense = results[0].probs
    for r in results:
        if r.sparsity == 0.0 and r.method not in ("int8", "fp16", "bf16"):
            np.testing.assert_allclose(r.probs, dense, atol=1e-6, rtol=0)
    # a table without the int8 block breaks the contract
    with pytest.raises(DataError, match="rows, expected"):
        check_predictions(table[table["method"] != "int8"], "t", ids, classes, methods, LEVELS)
    # int8 at a level it does not take is not a block of the contract
    bad = table.copy()
    bad.loc[bad["method"] == "int8", "sparsity"] = 0.3
    with pytest.raises(DataError, match="int8@0"):
        check_predictions(bad, "t", ids, classes, methods, LEVELS)


# --- bad input --------------------------------------------------------------------------

def test_config_refuses_unknown_methods_and_keys():
    with pytest.raises(ConfigError, match="prune.methods\\[1\\] must be one of l1, random, l1_layer, channel"):
        from_dict({"prune": {"methods": ["l1", "l2"]}})
    with pytest.raises(ConfigError, match="prune.random_masks must be one of independent, nested"):
        from_dict({"prune": {"random_masks": "fresh"}})
    with pytest.raises(ConfigError, match="prune.calibration_images"):
        from_dict({"prune": {"calibration_images": 0}})
    p = from_dict({"prune": {"methods": ["l1", "channel", "int8", "l1_finetune"], "finetune_epochs": 2}})
    assert p.prune.random_masks == "independent" and p.prune.finetune_epochs == 2


def test_a_missing_engine_is_refused_before_any_prediction(monkeypatch):
    calls = []
    model = _model()
    for module in ("onnxruntime", "torch_pruning"):
        monkeypatch.setitem(sys.modules, module, None)  # `import onnxruntime` raises ImportError
    for method, fix in (("int8", "pip install onnx onnxruntime"), ("channel", "pip install torch-pruning")):
        with pytest.raises(ConfigError, match=f"prune.methods: {method} needs .*`{fix}`"):
            prune_and_predict(model, _images(4), ["l1", method], LEVELS, 0, 8, CPU, context=_context(),
                              on_level=calls.append)
    assert calls == []  # refused before the first (method, level) was predicted
