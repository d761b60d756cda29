"""Training input: images/s of the training loop vs the model's own forward+backward+step.

Ours: ``cxrprune.training.loop.train_epoch``, the training loop itself: a seeded permutation,
uint8 rows gathered from the in-memory cache, converted to float, augmented as a batch
(random flip + rotation up to 15 degrees, one ``affine_grid``/``grid_sample``), normalised
to 3-channel channels-last, then forward, BCE loss, backward and an Adam step.

Reference: the same model, loss and optimizer on inputs already augmented, normalised and
in memory (the same number of batches of the same size): forward + backward + step only,
twice: with glibc's default allocator behaviour ("plain") and inside the same
``cpu_heap_reuse`` scope as ours ("same settings"; on the CPU ``train_epoch`` runs in one).
``ours / reference (same settings)`` is the share of the model's own rate that the input
path leaves (target >= 0.85); ``ours / reference (plain)`` includes the allocator gain.

Same process, interleaved: epochs rotate ours / references (the order changes each repeat); medians are reported,
with wall time and the process's CPU time, plus the input path alone (gather + convert +
augment + normalise) timed apart. The cache
is built from generated 1024x1024 PNGs (a few, tiled to ``--images``: the pixels do not
change the cost).

Defaults: the project's CPU configuration (ResNet18 at 48 px, batch 128). The paper's:
``--arch resnet50 --image-size 256 --batch-size 16 --images 64 --repeats 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from common import make_pngs, median, print_table, record, spread, timed
from torch import nn

from cxrprune.core.config import TrainConfig
from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.core.runtime import pick_device
from cxrprune.datasets.prepare import load_images
from cxrprune.training.augment import augment, normalize, to_unit
from cxrprune.training.loop import train_epoch
from cxrprune.training.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=1024, help="images per epoch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sources", type=int, default=16, help="distinct generated PNGs, tiled to --images")
    args = ap.parse_args()
    with record("bench_train_input", args) as fig:
        _measure(args, fig)


def _measure(args, fig: dict) -> None:
    device = pick_device(args.device)
    cfg = TrainConfig(arch=args.arch, batch_size=args.batch_size, rotation=15.0, hflip=True)

    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in make_pngs(tmp, min(args.sources, args.images))]
        base = load_images(pd.DataFrame({"path": paths}), args.image_size, 0, "cache")
    cache = np.resize(base, (args.images, args.image_size, args.image_size))
    x = torch.from_numpy(np.ascontiguousarray(cache))
    rng = np.random.default_rng(0)
    y = torch.from_numpy((rng.random((args.images, args.classes)) < 0.1).astype(np.float32))

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = build_model(args.arch, args.classes).to(device, memory_format=torch.channels_last)
        return m, torch.optim.Adam(m.parameters(), lr=cfg.lr)

    loss_fn = nn.BCEWithLogitsLoss()
    ours_model, ours_opt = fresh()
    ref_model, ref_opt = fresh()
    heap_model, heap_opt = fresh()
    gen = torch.Generator().manual_seed(0)

    # The reference's inputs: the same kind of augmented, normalised batches, made once.
    perm = torch.randperm(args.images, generator=torch.Generator().manual_seed(1))
    batches = []
    for s in range(0, args.images, args.batch_size):
        idx = perm[s:s + args.batch_size]
        batches.append((normalize(augment(to_unit(x[idx], device), cfg.rotation, cfg.hflip, gen)),
                        y[idx].to(device)))

    def ref_epoch(model=ref_model, opt=ref_opt) -> None:
        model.train()
        for inputs, target in batches:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), target)
            loss.backward()
            opt.step()
        float(loss.detach())  # synchronise (GPU)

    def heap_epoch() -> None:
        with cpu_heap_reuse() if device.type == "cpu" else contextlib.nullcontext():
            ref_epoch(heap_model, heap_opt)

    def ours_epoch() -> None:
        train_epoch(ours_model, ours_opt, loss_fn, x, y, cfg, gen, device)

    def input_only() -> None:
        p = torch.randperm(args.images, generator=gen)
        for s in range(0, args.images, args.batch_size):
            idx = p[s:s + args.batch_size]
            normalize(augment(to_unit(x[idx], device), cfg.rotation, cfg.hflip, gen))

    # Warm-up: one epoch each (oneDNN primitives, allocator).
    paths_ = {"ours": ours_epoch, "ref": ref_epoch, "ref_heap": heap_epoch}
    for fn in paths_.values():
        fn()
    wall = {k: [] for k in paths_}
    cpu = {k: [] for k in paths_}
    t_in = []
    names = list(paths_)
    for r in range(args.repeats):
        for name in names[r % 3:] + names[:r % 3]:
            c = time.process_time()
            _, t = timed(paths_[name])
            wall[name].append(t)
            cpu[name].append(time.process_time() - c)
        t_in.append(timed(input_only)[1])
        print(f"  repeat {r}: " + ", ".join(f"{k} {args.images / wall[k][-1]:.1f} img/s" for k in names)
              + f", input path alone {args.images / t_in[-1]:.0f} img/s", flush=True)

    rate = {k: [args.images / t for t in v] for k, v in wall.items()}
    rate_in = [args.images / t for t in t_in]
    print(f"\n{args.arch} at {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.images} images per "
          f"epoch, {args.repeats} repeats, device {device}, Adam, BCE-with-logits, rotation 15 + hflip")
    print_table(["path", "images/s (wall), median [min-max]", "CPU s per epoch, median"], [
        ["reference (plain): model fwd+bwd+step on in-memory tensors", spread(rate["ref"]), median(cpu["ref"])],
        ["reference (same settings: inside cpu_heap_reuse)", spread(rate["ref_heap"]), median(cpu["ref_heap"])],
        ["ours: train_epoch from the uint8 cache", spread(rate["ours"]), median(cpu["ours"])],
        ["input path alone (gather, convert, augment, normalise)", spread(rate_in), ""],
    ])
    same = median(rate["ours"]) / median(rate["ref_heap"])
    plain = median(rate["ours"]) / median(rate["ref"])
    per_rep = median([b / a for a, b in zip(wall["ours"], wall["ref_heap"])])
    print(f"\nours / reference (same settings) = {same:.3f} (ratio of medians; per-repeat median {per_rep:.3f}; "
          f"CPU time {median(cpu['ref_heap']) / median(cpu['ours']):.3f})   (target >= 0.85)")
    print(f"ours / reference (plain)         = {plain:.3f} (CPU time {median(cpu['ref']) / median(cpu['ours']):.3f})")
    fig.update(arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
               ref_plain_img_s=median(rate["ref"]), ref_same_img_s=median(rate["ref_heap"]),
               ours_img_s=median(rate["ours"]), ours_over_ref_same=same, ours_over_ref_plain=plain)
    implied = median(wall["ref_heap"]) / (median(wall["ref_heap"]) + median(t_in))
    print(f"input path = {median(t_in) / median(wall['ours']):.1%} of an epoch of ours; reference + input path "
          f"alone implies ours / reference = {implied:.3f} (robust to other load: the input path is short)")


if __name__ == "__main__":
    main()
