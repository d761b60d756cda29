"""Prune + predict for one seed: the authors' approach vs the prune stage, and the pure forward limit.

Baseline (the authors' approach, Holste et al. 2023, VITA-Group/PruneCXR ``src/prune.py``):
for every level a fresh ResNet (constructor + ``load_state_dict``),
``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` over every Conv2d/Linear
weight, inference under ``torch.no_grad`` with the pruning hooks on (NCHW, the model's
default), and a ``DataLoader`` over a ``Dataset`` that decodes and resizes the 1024x1024
source PNGs on every pass, then ToTensor + ImageNet ``Normalize`` (the authors decode with
cv2; here the same PIL decode+resize as the prepare stage, so both paths see identical
pixels and their probabilities can be compared to 1e-5).

Ours: ``cxrprune.compression.prune.prune_and_predict`` (the prune stage's code path) over the uint8
cache; the one-time cache creation (decode + resize of the same PNGs) is timed separately.

Pure forward limit: the same dense model with the same settings (channels-last,
inference_mode, same batches) on inputs already converted and normalised in memory: only
``model(x)`` and the sigmoid. ``ours / limit`` is what pruning, input conversion and
bookkeeping add.

Interleaving: ``prune_and_predict`` calls back after every level; the callback runs one
limit pass and, at the baseline's levels, one baseline level, so the three are measured
side by side under the same machine load. Time spent in the callback is excluded from ours.

Default: ResNet50 at 256x256, 32 images, 20 levels for ours and the limit, 4 of them for
the baseline (scaled to 20 per level; say so). ``--images 21000 --baseline-levels 20`` is
the full per-seed run. Also extrapolates each path to ``--full-n`` test images from its
measured fixed (per level / per seed) and per-image costs.

``--ap-check``: bf16 autocast deviation (probabilities and per-class AP) against fp32 on
the synthetic study data (data/raw/synthetic) with a quickly trained ResNet18 at 48 px.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import STUDY_LEVELS, machine, make_pngs, median, print_table, spread, timed
from torch import nn
from torch.nn.utils import prune as tprune

from cxrprune.compression.masks import GlobalPruner
from cxrprune.compression.predict import cpu_chunk
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.numerics import precision
from cxrprune.core.runtime import _LIBC, cpu_heap_reuse, pick_device
from cxrprune.datasets.prepare import load_image, load_images
from cxrprune.training.augment import normalize, to_unit
from cxrprune.training.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    prunable_parameters,
)


@contextlib.contextmanager
def glibc_defaults():
    """Inside ours' :func:`cpu_heap_reuse` scope (the callbacks run there), put glibc back to
    what a standalone process settles at (mmap above 32 MB, trim above 64 MB) for the
    baseline and the plain settings, then restore ours' settings. The heap is not trimmed
    on entry: the baseline may reuse memory ours left there (if anything, in its favour),
    and ours does not pay for page-faulting its heap in again after each baseline level."""
    import cxrprune.compression.predict as cp

    if _LIBC is None or cp._heap_depth == 0:  # not inside ours' scope: already the defaults
        yield
        return
    _LIBC.mallopt(-4, 65536)       # M_MMAP_MAX
    _LIBC.mallopt(-3, 32 << 20)    # M_MMAP_THRESHOLD
    _LIBC.mallopt(-1, 64 << 20)    # M_TRIM_THRESHOLD
    try:
        yield
    finally:
        _LIBC.mallopt(-1, 2**31 - 1)
        _LIBC.mallopt(-4, 0)


class PngDataset(torch.utils.data.Dataset):
    """The authors' test Dataset: decode + resize + ToTensor + Normalize on every access."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = load_image(self.paths[i], self.size)  # PIL decode + resize (the authors: cv2)
        x = torch.from_numpy(np.array(img)).unsqueeze(0).expand(3, -1, -1).float().div(255)  # ToTensor, 3 ch
        return x.sub(self.mean).div(self.std)  # Normalize


def baseline_level(arch: str, n_classes: int, state: dict, level: float, paths: list[str], size: int,
                   batch_size: int, workers: int, device: torch.device) -> tuple[np.ndarray, dict]:
    """One level the authors' way; returns probabilities and the time of each part."""
    t = {}
    start = time.perf_counter()
    model = build_model(arch, n_classes)
    model.load_state_dict(state)
    model = model.to(device)
    t["build+load"] = time.perf_counter() - start
    start = time.perf_counter()
    if level > 0:
        tprune.global_unstructured(prunable_parameters(model), pruning_method=tprune.L1Unstructured, amount=level)
    t["global_unstructured"] = time.perf_counter() - start
    model.eval()
    loader = torch.utils.data.DataLoader(PngDataset(paths, size), batch_size=batch_size, shuffle=False,
                                         num_workers=workers)
    probs, t["decode+resize"], t["forward(hooks)"] = [], 0.0, 0.0
    with torch.no_grad():
        it = iter(loader)
        while True:
            a = time.perf_counter()
            try:
                x = next(it)
            except StopIteration:
                break
            b = time.perf_counter()
            probs.append(torch.sigmoid(model(x.to(device))).cpu().numpy())
            t["decode+resize"] += b - a
            t["forward(hooks)"] += time.perf_counter() - b
    return np.concatenate(probs), t


def calibrated_model(arch: str, n_classes: int, cache: np.ndarray, batch_size: int, seed: int) -> nn.Module:
    """A seeded model whose BatchNorm statistics come from the benchmark images, so its
    probabilities are spread like a trained model's rather than saturated."""
    torch.manual_seed(seed)
    model = build_model(arch, n_classes)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for start in range(0, len(cache), batch_size):
            model(normalize(to_unit(torch.from_numpy(cache[start:start + batch_size]), torch.device("cpu"))))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--source-size", type=int, default=1024)
    ap.add_argument("--images", type=int, default=32, help="test images (the real test set: ~21,000)")
    ap.add_argument("--levels", type=int, default=20, help="first k of the study's 20 levels for ours and the limit")
    ap.add_argument("--baseline-levels", type=int, default=4, help="levels run the authors' way (evenly spread)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers (the authors: 8)")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none", help="ours only")
    ap.add_argument("--allow-tf32", action="store_true", help="ours only (CUDA)")
    ap.add_argument("--full-n", type=int, default=21000, help="test-set size for the extrapolation")
    ap.add_argument("--src-dir", type=Path, help="keep/reuse the generated PNGs here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ap-check", action="store_true", help="only the bf16-vs-fp32 AP deviation check")
    ap.add_argument("--no-settings", action="store_true", help="skip the forward-settings comparison")
    ap.add_argument("--settings-repeats", type=int, default=3)
    ap.add_argument("--ap-epochs", type=int, default=3)
    args = ap.parse_args()
    print(machine())
    if args.ap_check:
        return ap_check(args)
    device = pick_device(args.device)
    autocast = None if args.autocast == "none" else args.autocast
    levels = STUDY_LEVELS[:args.levels]
    pick = np.unique(np.round(np.linspace(0, len(levels) - 1, min(args.baseline_levels, len(levels)))).astype(int))
    base_levels = {levels[i] for i in pick}

    with tempfile.TemporaryDirectory() as tmp:
        src = args.src_dir or Path(tmp)
        paths = [str(p) for p in make_pngs(src, args.images, args.source_size, args.seed)]
        # One-time cache creation: what the prepare stage does, once per dataset (all seeds).
        cache, t_cache = timed(load_images, pd.DataFrame({"path": paths}), args.image_size, 0, "cache")
        model = calibrated_model(args.arch, args.classes, cache, args.batch_size, args.seed)
        state = copy.deepcopy(model.state_dict())
        images = torch.from_numpy(cache)

        # The limit: same model settings as ours (channels-last, inference_mode, ours' CPU
        # chunk and heap reuse, as it runs inside ours' scope), inputs ready in memory.
        step = args.batch_size if device.type != "cpu" else min(args.batch_size, cpu_chunk(args.image_size))
        limit_model = copy.deepcopy(model).to(device, memory_format=torch.channels_last).eval()
        limit_inputs = [normalize(to_unit(images[s:s + step], device)) for s in range(0, len(images), step)]

        @torch.inference_mode()
        def limit_pass() -> np.ndarray:
            with precision(device, autocast, args.allow_tf32):
                return torch.cat([torch.sigmoid(limit_model(x).float()) for x in limit_inputs]).cpu().numpy()

        # Forward settings, dense model, same cached inputs: what each choice is worth.
        nchw_model = copy.deepcopy(model).to(device).eval()
        nchw_inputs = [x.contiguous() for x in [normalize(to_unit(images[s:s + args.batch_size], device))
                                                for s in range(0, len(images), args.batch_size)]]
        cl_inputs = [x.contiguous(memory_format=torch.channels_last) for x in nchw_inputs]

        @torch.no_grad()
        def settings_pass(which: str) -> None:  # run inside one cpu_heap_reuse scope
            if which == "ours":
                limit_pass()
                return
            with glibc_defaults():
                for x in (nchw_inputs if which == "nchw" else cl_inputs):
                    torch.sigmoid((nchw_model if which == "nchw" else limit_model)(x))
            if device.type == "cuda":
                torch.cuda.synchronize()

        limit_pass()  # warm-up (oneDNN primitives for these shapes), untimed
        ours_t, limit_t, base_t, base_parts = [], [], {}, {}
        ours_probs, base_probs, limit_probs = {}, {}, None
        mark = [0.0, 0.0]

        def on_level(res) -> None:
            nonlocal limit_probs
            ours_t.append(time.perf_counter() - mark[0])
            cpu["ours"].append(time.process_time() - mark[1])
            ours_probs[res.sparsity] = res.probs
            c = time.process_time()
            probs, t = timed(limit_pass)
            limit_t.append(t)
            cpu["limit"].append(time.process_time() - c)
            limit_probs = probs if limit_probs is None else limit_probs
            if res.sparsity in base_levels:
                c = time.process_time()
                with glibc_defaults():
                    (probs, parts), t = timed(baseline_level, args.arch, args.classes, state, res.sparsity,
                                              paths, args.image_size, args.batch_size, args.workers, device)
                base_t[res.sparsity], base_parts[res.sparsity], base_probs[res.sparsity] = t, parts, probs
                cpu["base"].append(time.process_time() - c)
            print(f"  level {res.sparsity:.2f}: ours {ours_t[-1]:.2f} s, limit {limit_t[-1]:.2f} s"
                  + (f", baseline {base_t[res.sparsity]:.2f} s" if res.sparsity in base_t else ""), flush=True)
            mark[:] = [time.perf_counter(), time.process_time()]

        ours_model = copy.deepcopy(model)
        cpu: dict[str, list[float]] = {"ours": [], "limit": [], "base": []}
        cpu_start = time.process_time()
        mark[:] = [time.perf_counter(), time.process_time()]
        prune_and_predict(ours_model, images, ["l1"], levels, args.seed, args.batch_size, device, on_level,
                          autocast=autocast, allow_tf32=args.allow_tf32)
        ours_t[-1] += time.perf_counter() - mark[0]  # the return after the last callback
        cpu["ours"][-1] += time.process_time() - mark[1]
        share = (time.process_time() - cpu_start) / max(sum(ours_t) + sum(limit_t) + sum(base_t.values()), 1e-9)

        settings_t: dict[str, list[float]] = {"nchw": [], "cl": [], "ours": []}
        if not args.no_settings:
            with cpu_heap_reuse() if device.type == "cpu" else contextlib.nullcontext():
                for r in range(args.settings_repeats):
                    for which in (("nchw", "cl", "ours") if r % 2 == 0 else ("ours", "cl", "nchw")):
                        settings_t[which].append(timed(settings_pass, which)[1])

        # Components of ours, measured apart (same process, after the run).
        prof = copy.deepcopy(model).to(device, memory_format=torch.channels_last)
        _, t_init = timed(lambda: GlobalPruner(prof))
        pruner = GlobalPruner(prof)
        _, t_reset = timed(pruner.reset, "l1")
        t_apply = [timed(pruner.apply, k)[1] for k in levels]
        def convert_all() -> None:
            for s in range(0, len(images), step):
                normalize(to_unit(images[s:s + step], device))
            if device.type == "cuda":
                torch.cuda.synchronize()

        t_conv = [timed(convert_all)[1] for _ in range(3)]

    report(args, device, levels, step, dict(ours_t=ours_t, limit_t=limit_t, base_t=base_t, base_parts=base_parts,
                                            ours_probs=ours_probs, base_probs=base_probs, limit_probs=limit_probs,
                                            t_cache=t_cache, settings_t=settings_t, t_init=t_init,
                                            t_reset=t_reset, t_apply=t_apply, t_conv=t_conv, cpu=cpu,
                                            share=share))


def report(args, device, levels, step, r: dict) -> None:
    n, L = args.images, len(levels)
    ours_t, limit_t, base_t = r["ours_t"], r["limit_t"], r["base_t"]
    ours_total, limit_total = sum(ours_t), sum(limit_t)
    has_base = bool(base_t)
    print(f"\n{args.arch} at {args.image_size}x{args.image_size} from {args.source_size}x{args.source_size} "
          f"8-bit PNGs, {n} images (a subset; the real test set has ~{args.full_n:,}), batch {args.batch_size} "
          f"(CPU chunk {step}), device {device}, ours precision {args.autocast}"
          f"{' +tf32' if args.allow_tf32 else ''}")
    print(f"levels: ours and limit {L} ({levels[0]}..{levels[-1]}); baseline {len(base_t)} "
          f"({', '.join(f'{k:g}' for k in sorted(base_t))})" + (", scaled to all levels with its median per level"
                                                               if has_base else ""))
    print_table(["level", "ours s", "limit s", "baseline s"],
                [[f"{k:.2f}", a, b, base_t.get(k, "")] for k, a, b in zip(levels, ours_t, limit_t)],
                title="per level (ours level 0 includes model.to, GlobalPruner init and the sort)")
    rows = []
    if has_base:
        base_per_level = median(list(base_t.values()))
        base_total = base_per_level * L
        rows.append(["baseline (authors), per seed", base_total,
                     f"{base_per_level:.3f} s/level x {L} (median of {spread(list(base_t.values()))})"])
    rows += [
        ["ours (prune stage), per seed", ours_total, f"{spread(ours_t)} s/level"],
        [f"pure forward limit, {L} dense passes", limit_total, f"{spread(limit_t)} s/pass"],
        ["one-time uint8 cache creation", r["t_cache"], f"{r['t_cache'] / n * 1000:.1f} ms/image, once per dataset"],
        ["ours + cache creation", ours_total + r["t_cache"], "cache counted in full against one seed"],
    ]
    print_table(["path", "seconds", "note"], rows, title="totals")
    print()
    if has_base:
        print(f"baseline / ours                = {base_total / ours_total:.2f}x   (target >= 5x)")
        print(f"baseline / (ours + cache)      = {base_total / (ours_total + r['t_cache']):.2f}x")
    print(f"ours / limit                   = {ours_total / limit_total:.3f}   (target <= 1.10)")
    c = r["cpu"]
    print(f"CPU seconds (user+sys of this process; inflated less than wall time by other load): ours {sum(c['ours']):.1f}, "
          f"limit {sum(c['limit']):.1f}" + (f", baseline {median(c['base']) * L:.1f} (median x {L})" if c["base"] else "")
          + f" -> ours/limit {sum(c['ours']) / sum(c['limit']):.3f}"
          + (f", baseline/ours {median(c['base']) * L / sum(c['ours']):.2f}x" if c["base"] else ""))
    print(f"CPU share during the run: {r['share']:.2f} of {torch.get_num_threads()} threads' worth "
          f"(below {torch.get_num_threads()}: other processes took the cores)")
    print(f"median per level: ours/limit   = {median([a / b for a, b in zip(ours_t[1:], limit_t[1:])]):.3f} "
          f"(levels after the first, i.e. without the one-time sort)")
    if has_base:
        diffs = [float(np.abs(r["base_probs"][k] - r["ours_probs"][k]).max()) for k in r["base_probs"]]
        print(f"max |p_baseline - p_ours|      = {max(diffs):.3g}   over {len(diffs)} levels x {n} images x "
              f"{args.classes} classes (target <= 1e-5 in fp32)")
    print(f"max |p_limit - p_ours(0.00)|   = {float(np.abs(r['limit_probs'] - r['ours_probs'][levels[0]]).max()):.3g}")

    # Where the time goes.
    if has_base:
        parts = {p: median([v[p] for v in r["base_parts"].values()])
                 for p in next(iter(r["base_parts"].values()))}
        print_table(["baseline part (median per level)", "seconds", "share"],
                    [[p, v, f"{v / sum(parts.values()):.1%}"] for p, v in parts.items()],
                    title="profile: baseline, per level")
    conv = median(r["t_conv"])
    t_apply = r["t_apply"]
    fixed = r["t_init"] + r["t_reset"]
    fwd_ours = max(ours_total - fixed - sum(t_apply) - L * conv, 0.0)
    print_table(["ours part", "seconds per seed", "share"],
                [["GlobalPruner init (flat copy)", r["t_init"], f"{r['t_init'] / ours_total:.1%}"],
                 ["reset: one sort of |w| values", r["t_reset"], f"{r['t_reset'] / ours_total:.1%}"],
                 [f"apply x {L} (in-place zeroing + count)", sum(t_apply), f"{sum(t_apply) / ours_total:.1%}"],
                 [f"uint8 -> normalised float x {L}", L * conv, f"{L * conv / ours_total:.1%}"],
                 ["forward + sigmoid (rest)", fwd_ours, f"{fwd_ours / ours_total:.1%}"]],
                title="profile: ours (parts timed apart after the run)")
    st = r["settings_t"]
    if st["ours"]:
        names = {"nchw": f"NCHW, default glibc, batch {args.batch_size} (the authors' forward, no hooks)",
                 "cl": f"channels-last, default glibc, batch {args.batch_size}",
                 "ours": f"channels-last, heap reuse, chunk {step}, {args.autocast} (ours = the limit)"}
        print_table(["dense forward, same cached inputs", "ms/image, median [min-max]", "vs NCHW"],
                    [[names[k], spread([t / n * 1000 for t in v]), f"{median(st['nchw']) / median(v):.2f}x"]
                     for k, v in st.items()],
                    title=f"profile: forward settings ({args.settings_repeats} interleaved repeats)")
    # Extrapolation to the full test set from fixed and per-image costs.
    N = args.full_n
    ours_img = (fwd_ours + L * conv) / (L * n)
    ours_full = fixed + sum(t_apply) + L * N * ours_img
    limit_full = L * N * median(limit_t) / n
    print(f"\nextrapolated to {N:,} test images (per seed, {L} levels, from the parts above):")
    if has_base:
        base_fixed = parts["build+load"] + parts["global_unstructured"]
        base_img = (parts["decode+resize"] + parts["forward(hooks)"]) / n
        base_full = L * (base_fixed + N * base_img)
        print(f"  baseline {base_full / 3600:.2f} h, ours {ours_full / 3600:.2f} h, limit {limit_full / 3600:.2f} h"
              f" -> baseline/ours {base_full / ours_full:.2f}x, ours/limit {ours_full / limit_full:.3f}")
        print(f"  per image: baseline forward(hooks, NCHW, no_grad) {parts['forward(hooks)'] / n * 1000:.1f} ms + "
              f"decode {parts['decode+resize'] / n * 1000:.1f} ms; ours {ours_img * 1000:.1f} ms; "
              f"limit {median(limit_t) / n * 1000:.1f} ms")
    else:
        print(f"  ours {ours_full / 3600:.2f} h, limit {limit_full / 3600:.2f} h, ours/limit {ours_full / limit_full:.3f}")


def ap_check(args) -> None:
    """bf16 autocast vs fp32 on the synthetic study data: probabilities and per-class AP."""
    from cxrprune.analysis.metrics import average_precision
    from cxrprune.core.config import TrainConfig
    from cxrprune.datasets.sources import read_source
    from cxrprune.training.loop import train_model

    root = Path("data/raw/synthetic")
    if not root.is_dir():
        raise SystemExit(f"{root} not found: run `dvc repro generate` (or `cxrprune generate`) first")
    data = read_source("nih-cxr-lt", root)
    size = 48
    caches = {s: load_images(data.splits[s], size, 0, s) for s in ("train", "val", "test")}
    cfg = TrainConfig(arch="resnet18", epochs=args.ap_epochs, patience=args.ap_epochs, batch_size=128)
    device = pick_device(args.device)
    result, t_train = timed(train_model, cfg, args.seed, data.splits["train"], caches["train"],
                            data.splits["val"], caches["val"], data.classes)
    y = data.splits["test"][data.classes].to_numpy()
    x = torch.from_numpy(caches["test"])
    out = {}
    for prec in ("fp32", "bf16"):
        res, t = timed(prune_and_predict, copy.deepcopy(result.model), x, ["l1", "random"], STUDY_LEVELS,
                       args.seed, 512, device, autocast=None if prec == "fp32" else "bf16")
        out.setdefault(prec, []).append((res, t))
    fp32, bf16 = out["fp32"][0][0], out["bf16"][0][0]
    rows, worst, all_d = [], 0.0, []
    for a, b in zip(fp32, bf16):
        ap_a, ap_b = average_precision(y, a.probs), average_precision(y, b.probs)
        d = np.abs(ap_a - ap_b)
        all_d.append(d)
        worst = max(worst, float(np.nanmax(d)))
        rows.append([a.method, f"{a.sparsity:.2f}", float(np.nanmean(ap_a)), float(np.nanmean(ap_b)),
                     float(np.nanmean(ap_a) - np.nanmean(ap_b)), float(np.nanmax(d)),
                     float(np.abs(a.probs - b.probs).max())])
    print(f"\nResNet18 at {size} px trained {args.ap_epochs} epochs on data/raw/synthetic "
          f"({len(caches['train'])} train images, {t_train:.0f} s); test {len(y)} images, device {device}")
    print_table(["method", "level", "mAP fp32", "mAP bf16", "mAP diff", "max |AP diff| class", "max |p diff|"],
                rows, title="bf16 autocast vs fp32 (ours, same model)")
    all_d = np.concatenate(all_d)
    print(f"\nper-class |AP(bf16) - AP(fp32)| over {len(rows)} (method, level) x {len(data.classes)} classes: "
          f"median {np.nanmedian(all_d):.4g}, 95th percentile {np.nanpercentile(all_d, 95):.4g}, max {worst:.4g}; "
          f"max |mAP diff| = {max(abs(r[4]) for r in rows):.4g}")
    print(f"test positives per class: min {int(y.sum(0).min())}, median {int(np.median(y.sum(0)))}")
    print(f"time per seed (2 methods x 20 levels, one run each, CPU): fp32 {out['fp32'][0][1]:.1f} s, "
          f"bf16 {out['bf16'][0][1]:.1f} s")


if __name__ == "__main__":
    main()
