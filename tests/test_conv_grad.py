"""``train.conv_weight_grad: gemm``: the weight gradient of small-output convolutions as one matrix
product (cxrprune.training.conv_grad), checked against torch's own autograd as the oracle."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from cxrprune.core.config import TrainConfig, from_dict
from cxrprune.core.errors import CxrpruneError
from cxrprune.training.conv_grad import MAX_OUTPUT_PIXELS, gemm_weight_grad
from cxrprune.training.loop import _gemm_weight_grad
from cxrprune.training.models import build_model

# (in, out, kernel, stride, padding, dilation, bias, input size): 1x1, 2x2 and larger outputs
CASES = [
    (64, 32, 3, 1, 1, 1, False, 1),   # 3x3 on a 1x1 map: only the centre tap sees the input
    (16, 32, 3, 2, 1, 1, False, 2),   # stride 2, 2x2 -> 1x1
    (16, 16, 3, 1, 1, 1, True, 2),    # with a bias
    (16, 32, 1, 2, 0, 1, False, 4),   # a ResNet downsample: 1x1 kernel, stride 2, 4x4 -> 2x2: left to torch
    (16, 32, 3, 2, 1, 1, False, 4),   # 3x3, stride 2, 4x4 -> 2x2
    (8, 8, 3, 1, 2, 2, False, 2),     # dilation 2
    (3, 8, 7, 2, 3, 1, False, 3),     # a ResNet stem on a tiny input -> 2x2
    (8, 8, 3, 1, 1, 1, False, 6),     # 6x6 output: left to torch
]


def _grads(conv: nn.Conv2d, x: torch.Tensor, gemm: bool) -> tuple[torch.Tensor, ...]:
    conv = copy.deepcopy(conv)
    x = x.detach().clone().requires_grad_(True)
    with gemm_weight_grad(conv, enabled=gemm):
        out = conv(x)
        fn = type(out.grad_fn).__name__
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return fn, x.grad, conv.weight.grad, (conv.bias.grad if conv.bias is not None else None)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_gradients_equal_torchs_own(case, channels_last):
    c_in, c_out, k, stride, padding, dilation, bias, size = case
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, dilation, bias=bias)
    x = torch.randn(5, c_in, size, size)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    fn_native, *native = _grads(conv, x, gemm=False)
    fn_gemm, *gemm = _grads(conv, x, gemm=True)
    out_pixels = ((size + 2 * padding - dilation * (k - 1) - 1) // stride + 1) ** 2
    # routed by output size and kernel only: the rest keep torch's own backward
    assert fn_native == "ConvolutionBackward0"
    routed = out_pixels <= MAX_OUTPUT_PIXELS and k > 1
    assert (fn_gemm == "_GemmWeightGradBackward") == routed, (fn_gemm, out_pixels, k)
    for a, b in zip(native, gemm):
        if a is None:
            assert b is None
            continue
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    # the gradient keeps the parameter's memory format, as torch's own does (the fused Adam step needs it)
    assert gemm[1].stride() == conv.weight.stride()


def test_a_resnet_trains_the_same_steps():
    """ResNet-10 at 32 px (its last stages at 2x2 and 1x1): three Adam steps from the same
    weights on the same batch give the same losses and weights to float rounding."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(16, 5) < 0.3).float()
    base = build_model("resnet10", 5, image_size=32).to(memory_format=torch.channels_last)
    runs = {}
    for gemm in (False, True):
        model = copy.deepcopy(base).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        with gemm_weight_grad(model, enabled=gemm):
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        runs[gemm] = (losses, model.state_dict())
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    for key, value in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][key], value, rtol=1e-4, atol=1e-5)


def test_block_leaves_the_model_as_it_was():
    model = build_model("resnet10", 4, image_size=32)
    keys = list(model.state_dict())
    with gemm_weight_grad(model):
        patched = [m for m in model.modules() if "_conv_forward" in vars(m)]
        assert patched and all(isinstance(m, nn.Conv2d) for m in patched)
        # evaluation (no autograd) takes torch's own path
        with torch.no_grad():
            out = model.eval()(torch.randn(2, 3, 32, 32))
        assert out.grad_fn is None
    assert not [m for m in model.modules() if "_conv_forward" in vars(m)]
    assert list(model.state_dict()) == keys
    copy.deepcopy(model)  # nothing bound to the block survives it


def test_a_pruning_mask_still_holds():
    """l1_finetune trains through torch.nn.utils.prune's reparametrisation (weight =
    weight_orig * mask): the masked weights' gradient is zero, the rest torch's own."""
    grads = {}
    for gemm in (False, True):
        torch.manual_seed(0)  # the same weights, mask and input on both sides
        conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        mask = (torch.rand_like(conv.weight) < 0.5).float()
        torch_prune.custom_from_mask(conv, "weight", mask)
        x = torch.randn(4, 8, 1, 1)
        with gemm_weight_grad(conv, enabled=gemm):
            conv(x).square().sum().backward()
        grads[gemm] = conv.weight_orig.grad
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-5, atol=1e-6)
    assert (grads[True][mask == 0] == 0).all()


def test_used_only_where_it_was_measured():
    gemm = TrainConfig(conv_weight_grad="gemm")
    assert _gemm_weight_grad(gemm, "cpu", "fp32")
    assert not _gemm_weight_grad(gemm, "cpu", "bf16")  # autocast: the saved input and the gradient differ in dtype
    assert not _gemm_weight_grad(gemm, "cuda", "fp32")  # cuDNN's own
    assert not _gemm_weight_grad(TrainConfig(conv_weight_grad="gemm", compile=True), "cpu", "fp32")
    assert not _gemm_weight_grad(TrainConfig(), "cpu", "fp32")  # native


def test_unknown_value_is_one_error():
    with pytest.raises(CxrpruneError, match="train.conv_weight_grad"):
        from_dict({"train": {"conv_weight_grad": "fast"}})
