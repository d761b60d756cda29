"""Convolution weight gradients: oneDNN's (torch's own) against one matrix product (``train.conv_weight_grad``).

Two parts, both sides in one process, alternated (the order flips every repeat), medians reported:

1. Per convolution of the model at the training resolution (batch ``--batch-size``): the
   weight gradient as torch computes it (``aten.convolution_backward`` with only the weight's
   output mask) against ``cxrprune.training.conv_grad``'s ``grad_out @ unfold(x)``; the largest
   relative difference of the two results is printed beside the times. This table is where
   ``conv_grad.uses_gemm``'s rule comes from: the product is used only for the shapes it won.
2. Whole training steps (forward, BCE loss, backward, fused Adam step; channels-last, as
   ``train_epoch`` runs them): the same model from the same initial weights with
   ``conv_weight_grad`` native and gemm, ``--steps`` steps per repeat.

Defaults: the study's CPU configuration (ResNet-10 at 32 px, batch 128, 20 classes).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import median, print_table, record, spread
from torch import nn

from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.training.conv_grad import gemm_weight_grad, gemm_weight_grad_of, uses_gemm
from cxrprune.training.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="training steps per repeat and side")
    args = ap.parse_args()
    with record("bench_conv_grad", args) as fig:
        _measure(args, fig)


def _time(fn, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _layers(args) -> list[dict]:
    """Every distinct convolution of the model with its input shape, from one forward pass."""
    torch.manual_seed(0)
    model = build_model(args.arch, args.classes, image_size=args.image_size).to(memory_format=torch.channels_last)
    seen: dict[tuple, dict] = {}

    def hook(conv, inputs, output):
        key = (tuple(inputs[0].shape), tuple(conv.weight.shape), conv.stride, conv.padding, conv.dilation)
        entry = seen.setdefault(key, {"conv": conv, "x": inputs[0].detach(), "out": tuple(output.shape), "count": 0})
        entry["count"] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    with torch.no_grad():
        model(torch.randn(args.batch_size, 3, args.image_size, args.image_size).contiguous(
            memory_format=torch.channels_last))
    for h in handles:
        h.remove()
    return list(seen.values())


def _measure(args, fig: dict) -> None:
    rows, layers = [], []
    for layer in _layers(args):
        conv, x = layer["conv"], layer["x"]
        weight = conv.weight.detach()
        grad_out = torch.randn(layer["out"]).contiguous(memory_format=torch.channels_last)

        def onednn():
            return torch.ops.aten.convolution_backward(grad_out, x, weight, None, conv.stride, conv.padding,
                                                       conv.dilation, False, (0, 0), 1, (False, True, False))[1]

        def gemm():
            return gemm_weight_grad_of(grad_out, x, weight, conv.stride, conv.padding, conv.dilation)

        ref = onednn()
        diff = ((ref - gemm()).abs().max() / ref.abs().max()).item()
        t = {"onednn": [], "gemm": []}
        for r in range(args.repeats):
            for name, fn in ((("onednn", onednn), ("gemm", gemm)) if r % 2 == 0 else (("gemm", gemm), ("onednn", onednn))):
                t[name].append(_time(fn, 3) * 1000)
        pixels = layer["out"][2] * layer["out"][3]
        desc = (f"{weight.shape[1]}->{weight.shape[0]} {weight.shape[2]}x{weight.shape[3]} stride {conv.stride[0]}, "
                f"input {x.shape[2]}x{x.shape[3]}")
        rows.append([desc, pixels, layer["count"], spread(t["onednn"]), spread(t["gemm"]),
                     f"{median(t['onednn']) / median(t['gemm']):.2f}", f"{diff:.1e}",
                     "gemm" if uses_gemm(conv, x.shape) else "onednn"])
        layers.append({"conv": desc, "output_pixels": pixels, "count": layer["count"],
                       "onednn_ms": median(t["onednn"]), "gemm_ms": median(t["gemm"]), "max_rel_diff": diff})
    print(f"\n{args.arch} at {args.image_size} px, batch {args.batch_size}: weight gradient per convolution, "
          f"ms per call, median [min-max] of {args.repeats} repeats (3 calls each)")
    print_table(["convolution", "output px", "in model", "oneDNN ms", "gemm ms", "oneDNN / gemm",
                 "max rel diff", "conv_weight_grad gemm uses"], rows)

    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size).contiguous(
        memory_format=torch.channels_last)
    y = (torch.rand(args.batch_size, args.classes, generator=torch.Generator().manual_seed(1)) < 0.1).float()
    loss_fn = nn.BCEWithLogitsLoss()

    def side(enabled: bool):
        torch.manual_seed(0)
        model = build_model(args.arch, args.classes, image_size=args.image_size).to(
            memory_format=torch.channels_last)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

        def steps(n: int) -> None:
            with cpu_heap_reuse(), gemm_weight_grad(model, enabled=enabled):
                for _ in range(n):
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model(x), y).backward()
                    opt.step()
        steps(2)  # warm-up: oneDNN primitives, allocator
        return steps

    sides = {"native": side(False), "gemm": side(True)}
    wall = {k: [] for k in sides}
    for r in range(args.repeats):
        for name in (("native", "gemm") if r % 2 == 0 else ("gemm", "native")):
            wall[name].append(_time(lambda: sides[name](args.steps)) / args.steps * 1000)
        print(f"  repeat {r}: native {wall['native'][-1]:.1f} ms/step, gemm {wall['gemm'][-1]:.1f} ms/step",
              flush=True)
    speedup = median(wall["native"]) / median(wall["gemm"])
    print(f"\nwhole training step (forward, loss, backward, fused Adam), {args.steps} steps per repeat:")
    print_table(["conv_weight_grad", "ms per step, median [min-max]"],
                [["native (torch's own)", spread(wall["native"])], ["gemm", spread(wall["gemm"])]])
    print(f"native / gemm = {speedup:.2f} (ratio of medians; per-repeat median "
          f"{median([a / b for a, b in zip(wall['native'], wall['gemm'])]):.2f})")
    fig.update(arch=args.arch, image_size=args.image_size, batch_size=args.batch_size, layers=layers,
               native_ms_per_step=median(wall["native"]), gemm_ms_per_step=median(wall["gemm"]),
               native_over_gemm=speedup)


if __name__ == "__main__":
    main()
