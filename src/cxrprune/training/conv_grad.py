"""The weight gradient of small-output convolutions as one matrix product (``train.conv_weight_grad``).

At the default 32 px, a ResNet's last two stages see feature maps of 2x2 and 1x1 pixels. For
those convolutions oneDNN's CPU backward falls back to its generic im2col + GEMM weight-gradient
kernel on AVX2 CPUs (``ONEDNN_VERBOSE=1``: ``x64:gemm:jit, backward_weights``), several times
slower there than the same sum as one ``torch.mm`` over the unfolded input; from 4x4 outputs
up oneDNN was the faster one (benchmarks/results/bench_conv_grad.txt). :func:`gemm_weight_grad`
routes only convolutions with at most :data:`MAX_OUTPUT_PIXELS` output pixels per image
through :class:`_GemmWeightGrad`; every other convolution, the forward pass and the input
gradient stay torch's own. The gradient is the same sum in another order: equal to float
rounding (tests/test_conv_grad.py), so a model trained with it differs from a ``native`` one
in the last bits at first and then as any two trainings with different summation orders do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# From 4x4 output pixels up, oneDNN's own kernel was faster (benchmarks/bench_conv_grad.py).
MAX_OUTPUT_PIXELS = 4


class _GemmWeightGrad(torch.autograd.Function):
    """``F.conv2d`` forward; backward: the input gradient from torch's convolution backward,
    the weight gradient as ``grad_out (C_out x N*L) @ unfold(x) (N*L x C_in*kh*kw)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conv
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, (0, 0), 1, (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            grad_w = gemm_weight_grad_of(grad_out, x, weight, stride, padding, dilation)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def gemm_weight_grad_of(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride, padding,
                        dilation) -> torch.Tensor:
    """The weight gradient of ``conv2d(x, weight)`` (one group) given ``grad_out``: the sum over
    images and output pixels of ``grad_out`` times the input patch, as one ``torch.mm``."""
    c_out = weight.shape[0]
    cols = F.unfold(x, weight.shape[-2:], dilation=dilation, padding=padding, stride=stride)  # N, C_in*kh*kw, L
    g = grad_out.reshape(grad_out.shape[0], c_out, -1)  # N, C_out, L
    flat = torch.mm(g.transpose(0, 1).reshape(c_out, -1), cols.transpose(1, 2).reshape(-1, cols.shape[1]))
    # in the weight's own memory format (channels_last), as torch's own gradient is
    return torch.empty_like(weight).copy_(flat.view(weight.shape))


def _routes(conv: nn.Conv2d) -> bool:
    """Convolutions the matrix product computes exactly as torch does (plain 2-D, one group,
    zero padding given as numbers) and faster: a 1x1 kernel is oneDNN's fast case at any size
    (benchmarks/results/bench_conv_grad.txt: the downsample rows)."""
    return (conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and tuple(conv.kernel_size) != (1, 1))


def uses_gemm(conv: nn.Conv2d, input_shape) -> bool:
    """Whether :func:`gemm_weight_grad` computes this convolution's weight gradient for an
    input of ``input_shape`` (N, C, H, W): a routed kernel with at most
    :data:`MAX_OUTPUT_PIXELS` output pixels per image."""
    if not _routes(conv) or len(input_shape) != 4:
        return False
    h, w = ((input_shape[i + 2] + 2 * conv.padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1)
            // conv.stride[i] + 1 for i in (0, 1))
    return h * w <= MAX_OUTPUT_PIXELS


def _conv_forward(conv: nn.Conv2d):
    native = conv._conv_forward

    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if torch.is_grad_enabled() and uses_gemm(conv, x.shape):
            return _GemmWeightGrad.apply(x, weight, bias, conv.stride, conv.padding, conv.dilation)
        return native(x, weight, bias)
    return forward


@contextlib.contextmanager
def gemm_weight_grad(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, ``model``'s small-output convolutions compute their weight gradient
    as one matrix product; on exit every module is as it was (an instance attribute removed:
    state dict, pickling and copies never see it). ``enabled=False``: a no-op."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and _routes(m)] if enabled else []
    for conv in convs:
        conv._conv_forward = _conv_forward(conv)
    try:
        yield model
    finally:
        for conv in convs:
            del conv._conv_forward
