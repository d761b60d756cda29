"""Prune + predict for one seed, the authors' approach vs the prune stage, extrapolated to the test set.

Baseline (the authors' approach, Holste et al. 2023, VITA-Group/PruneCXR ``src/prune.py``),
per level: a fresh ResNet (constructor + ``load_state_dict``),
``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` over every Conv2d/Linear
weight, inference under ``torch.no_grad`` with the pruning hooks on (NCHW), through a
``DataLoader`` (``--workers``, default 0) over a ``Dataset`` that decodes and resizes the
1024x1024 source PNGs on every pass, then ToTensor + ImageNet ``Normalize`` (the authors
decode with cv2; here the prepare stage's PIL decode + resize, so both paths see the same
pixels and their probabilities can be compared).

Ours: ``cxrprune.compression.prune.prune_and_predict``, the prune stage's code, called as the
stage calls it (one call per seed and method with all its levels) over the uint8 cache.

How it is measured -- one process, no subprocesses; each step is interleaved:

1. Fixed costs at all 20 study levels, once each, level by level: the baseline's model
   rebuild + ``global_unstructured`` (a pass without images); ours' ``model.to``
   (channels-last) + ``GlobalPruner`` init + sort, once per seed, and ``apply(level)``.
2. Full passes at each batch size of ``--batch-sizes`` (default 32 and the authors' 256)
   over ``--batches`` x batch images (default 2: two batches per level for both paths), at
   the levels of ``--levels`` (default 0.5, 0.9). Before the timed rounds each path gets
   the same untimed warm-up: one pass over one batch of that size. Then ``--rounds``
   rounds; each runs the baseline at every level and one ``prune_and_predict`` call with
   those levels, the order of the two paths flipping every round and between batch sizes.
   Per-image cost, measured directly in every pass: the baseline's decode + forward loop
   time over the images; ours' time inside ``predict_probs`` (the stage's forward over the
   cache; the benchmark wraps that name to time it) over the images.
3. The forward alone on the same normalised inputs in memory, at each batch size over the
   same images, ``--rounds`` rounds rotating the order, after one untimed pass each: the
   baseline's pruned model **with its hooks**, the **same model after** ``prune.remove``
   (NCHW, no_grad), the same in channels-last, and ours' settings (channels-last,
   ``inference_mode``, ours' CPU chunk, inside ``cpu_heap_reuse``: the pure forward limit).
   Hooks vs layout vs heap: what the baseline's slower forward is attributable to.

Extrapolated, not measured: the per-seed time at ``--full-n`` images (default 21,000, the
NIH-CXR-LT test set) and 20 levels, ``T = fixed costs of the 20 levels (1.) + 20 x N x
per-image cost (2.)``, for each path and batch size. The headline is that ratio at the
authors' batch size; the ratio at the measured size is printed beside it.

The model is a seeded ResNet50 whose BatchNorm statistics come from the benchmark images
(outputs spread like a trained model's, not saturated). The sources are generated
CXR-like 8-bit 1024x1024 PNGs (``common.make_pngs``).

``--ap-check``: bf16 autocast deviation (probabilities and per-class AP) against fp32 on
the synthetic study data (data/raw/synthetic) with a quickly trained ResNet18 at 48 px;
its output goes to ``results/bench_prune_predict_ap.*``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import STUDY_LEVELS, make_pngs, median, print_table, record, spread, timed
from torch import nn
from torch.nn.utils import prune as tprune

from cxrprune.compression.masks import GlobalPruner
from cxrprune.compression.predict import cpu_chunk
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.heap import cpu_heap_reuse
from cxrprune.core.runtime import pick_device
from cxrprune.datasets.prepare import load_image, load_images
from cxrprune.training.augment import normalize, to_unit
from cxrprune.training.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    prunable_parameters,
)


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
    return (np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32)), t


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
    ap.add_argument("--batch-sizes", default="32,256", help="comma-separated; 256 is the authors' (default 32,256)")
    ap.add_argument("--batches", type=int, default=2, help="batches per level and batch size (default 2, at least 2)")
    ap.add_argument("--levels", default="0.5,0.9", help="levels of the full passes (default 0.5,0.9)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of full and forward-only passes")
    ap.add_argument("--fixed-levels", type=int, default=20,
                    help="study levels whose fixed costs are measured, evenly spread (default all 20); the others "
                         "are interpolated linearly in the level")
    ap.add_argument("--forward-batch-sizes", default=None, help="batch sizes of step 3 (default: --batch-sizes; 'none': skip step 3)")
    ap.add_argument("--sources", type=int, default=None,
                    help="distinct generated PNGs, cycled to the images needed (default: one per image); decoding "
                         "a repeated file costs the same")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both paths (default: torch's)")
    ap.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers (the authors: 8)")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full-n", type=int, default=21000, help="test-set size for the extrapolation")
    ap.add_argument("--src-dir", type=Path, help="keep/reuse the generated PNGs here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ap-check", action="store_true", help="only the bf16-vs-fp32 AP deviation check")
    ap.add_argument("--ap-epochs", type=int, default=3)
    ap.add_argument("--tag", default="", help="results/bench_prune_predict-<tag>.* instead of the default name")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batches < 2:
        ap.error("--batches must be at least 2 (two batches per level)")
    name = "bench_prune_predict" + ("_ap" if args.ap_check else "") + (f"-{args.tag}" if args.tag else "")
    with record(name, args) as fig:
        if args.ap_check:
            ap_check(args)
        else:
            measure(args, fig)


def measure(args, fig: dict) -> None:
    device = pick_device(args.device)
    # Ours' per-image cost is the time inside predict_probs (the stage's forward over the
    # cache), timed by wrapping the name prune_and_predict calls; nothing else changes.
    import cxrprune.compression.prune as stage_prune

    predict_s: list[float] = []
    real_predict = stage_prune.predict_probs

    def timed_predict(*a, **kw):
        out, t = timed(real_predict, *a, **kw)
        predict_s.append(t)
        return out

    stage_prune.predict_probs = timed_predict
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    levels = [float(k) for k in args.levels.split(",")]
    n_max = args.batches * max(sizes)
    with tempfile.TemporaryDirectory() as tmp:
        src = args.src_dir or Path(tmp)
        distinct = [str(p) for p in make_pngs(src, min(args.sources or n_max, n_max), args.source_size, args.seed)]
        paths = [distinct[i % len(distinct)] for i in range(n_max)]
        cache, t_cache = timed(load_images, pd.DataFrame({"path": paths}), args.image_size, 0, "cache")
        model = calibrated_model(args.arch, args.classes, cache[:64], 32, args.seed)
        state = copy.deepcopy(model.state_dict())
        images = torch.from_numpy(cache)
        print(f"{args.arch} at {args.image_size} px from {args.source_size} px 8-bit PNGs; batch sizes {sizes}, "
              f"{args.batches} batches per level; levels {levels}; {args.rounds} rounds; one-time cache creation "
              f"{t_cache / n_max * 1000:.1f} ms/image (not counted)", flush=True)

        def run_base(b: int, n: int, k: float) -> tuple[np.ndarray, dict, float]:
            (probs, parts), t = timed(baseline_level, args.arch, args.classes, state, k, paths[:n], args.image_size,
                                      b, args.workers, device)
            return probs, parts, t

        def run_ours(b: int, n: int, ks: list[float]) -> tuple[dict, list[float], list[float]]:
            """Probabilities, seconds per level and seconds inside ``predict_probs`` per level."""
            m = copy.deepcopy(model)
            times, probs, mark = [], {}, [time.perf_counter()]
            del predict_s[:]

            def on_level(res) -> None:
                times.append(time.perf_counter() - mark[0])
                probs[res.sparsity] = res.probs
                mark[0] = time.perf_counter()

            prune_and_predict(m, images[:n], ["l1"], ks, args.seed, b, device, on_level)
            times[-1] += time.perf_counter() - mark[0]  # the return after the last callback
            return probs, times, list(predict_s)

        # 2. Fixed costs at all 20 levels (measured first, so 1. can subtract them).
        fixed_base, fixed_ours_apply = {}, {}
        prof = copy.deepcopy(model)
        start = time.perf_counter()
        pruner = GlobalPruner(prof.to(device, memory_format=torch.channels_last))
        t_seed = time.perf_counter() - start
        _, t_sort = timed(pruner.reset, "l1")
        fixed_ours_seed = t_seed + t_sort
        pick = np.unique(np.round(np.linspace(0, len(STUDY_LEVELS) - 1, args.fixed_levels)).astype(int))
        measured = [STUDY_LEVELS[i] for i in pick]
        for k in STUDY_LEVELS:
            if k in measured:
                _, parts, _ = run_base(max(sizes), 0, k)  # no images: rebuild + global_unstructured only
                fixed_base[k] = parts["build+load"] + parts["global_unstructured"]
            fixed_ours_apply[k] = timed(pruner.apply, k)[1]
        del prof, pruner
        print(f"baseline fixed costs measured at levels {measured}: "
              + ", ".join(f"{fixed_base[k]:.2f}" for k in measured) + " s", flush=True)
        if len(measured) < len(STUDY_LEVELS):  # interpolated, not measured: said in the output
            fixed_base = dict(zip(STUDY_LEVELS, np.interp(STUDY_LEVELS, measured, [fixed_base[k] for k in measured]),
                                  strict=True))
        print(f"fixed costs, 20 levels: baseline rebuild + global_unstructured {sum(fixed_base.values()):.1f} s; "
              f"ours model.to + GlobalPruner init + sort {fixed_ours_seed:.2f} s + apply x 20 "
              f"{sum(fixed_ours_apply.values()):.2f} s", flush=True)

        # 1. Full passes, interleaved.
        full: dict[int, dict] = {}
        maxdiff = 0.0
        for i, b in enumerate(sizes):
            n = args.batches * b
            run_base(b, b, levels[0])  # equal warm-up: one batch through each path
            run_ours(b, b, levels[:1])
            res = {"base_pass": [], "base_img": [], "ours_pass": [], "ours_img": [], "base_parts": []}
            for r in range(args.rounds):
                order = ("base", "ours") if (r + i) % 2 == 0 else ("ours", "base")
                for path in order:
                    if path == "base":
                        bp = {}
                        for k in levels:
                            probs, parts, t = run_base(b, n, k)
                            bp[k] = probs
                            res["base_pass"].append(t)
                            res["base_parts"].append(parts)
                            res["base_img"].append((parts["decode+resize"] + parts["forward(hooks)"]) / n)
                    else:
                        op, times, inside = run_ours(b, n, levels)
                        res["ours_pass"] += times
                        res["ours_img"] += [t / n for t in inside]
                maxdiff = max(maxdiff, max(float(np.abs(bp[k] - op[k]).max()) for k in levels))
                print(f"  batch {b}, round {r} ({' then '.join(order)}): baseline "
                      f"{', '.join(f'{t:.2f}' for t in res['base_pass'][-len(levels):])} s, ours "
                      f"{', '.join(f'{t:.2f}' for t in res['ours_pass'][-len(levels):])} s per level", flush=True)
            full[b] = res

        # 3. Forward alone, same inputs in memory: hooks vs prune.remove vs layout vs ours' settings.
        def pruned_with_hooks() -> nn.Module:  # the baseline's model at the first level
            m = build_model(args.arch, args.classes)
            m.load_state_dict(state)
            tprune.global_unstructured(prunable_parameters(m), pruning_method=tprune.L1Unstructured,
                                       amount=levels[0])
            return m.eval()

        hooked, removed = pruned_with_hooks(), pruned_with_hooks()  # L1 masks are deterministic: the same
        for mod, name in prunable_parameters(removed):
            tprune.remove(mod, name)  # weight = weight_orig * mask, hooks gone
        removed_cl = copy.deepcopy(removed).to(memory_format=torch.channels_last)
        fwd: dict[int, dict[str, list[float]]] = {}
        hook_diff = 0.0
        fwd_sizes = sizes if args.forward_batch_sizes is None else [
            int(x) for x in args.forward_batch_sizes.split(",") if x.strip() not in ("", "none")]
        for b in fwd_sizes:
            fwd[b], d = forward_alone(hooked, removed, removed_cl, images[:args.batches * b], b, args.rounds, device)
            hook_diff = max(hook_diff, d)
            print(f"  forward alone, batch {b}: " + ", ".join(f"{nm} {median(v) * 1000:.1f} ms/img"
                                                            for nm, v in fwd[b].items()), flush=True)

    fig["fixed_levels_measured"] = measured
    report(args, sizes, levels, fixed_base, fixed_ours_seed, fixed_ours_apply, full, fwd, maxdiff, hook_diff, fig)


def forward_alone(hooked: nn.Module, removed: nn.Module, removed_cl: nn.Module, images: torch.Tensor, b: int,
                  rounds: int, device: torch.device) -> tuple[dict[str, list[float]], float]:
    """Seconds per image of each forward variant (step 3 of the docstring) and max |p_hooked - p_removed|."""
    n = len(images)
    x = normalize(to_unit(images, device)).contiguous()
    xs = [x[s:s + b] for s in range(0, n, b)]
    xs_cl = [t.contiguous(memory_format=torch.channels_last) for t in xs]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    chunk = min(b, cpu_chunk(images.shape[-1]))

    @torch.no_grad()
    def plain(m: nn.Module, batches: list[torch.Tensor]) -> np.ndarray:
        return torch.cat([torch.sigmoid(m(t)) for t in batches]).numpy()

    @torch.inference_mode()
    def limit() -> np.ndarray:
        with cpu_heap_reuse():
            return torch.cat([torch.sigmoid(removed_cl(x_cl[s:s + chunk])) for s in range(0, n, chunk)]).numpy()

    variants = {"hooked NCHW": lambda: plain(hooked, xs), "removed NCHW": lambda: plain(removed, xs),
                "removed channels-last": lambda: plain(removed_cl, xs_cl), "ours' settings (limit)": limit}
    names = list(variants)
    for nm in names:  # equal warm-up: one untimed pass each
        variants[nm]()
    times: dict[str, list[float]] = {nm: [] for nm in names}
    outs = {}
    for r in range(rounds):
        for nm in names[r % len(names):] + names[:r % len(names)]:
            outs[nm], t = timed(variants[nm])
            times[nm].append(t / n)
    return times, float(np.abs(outs["hooked NCHW"] - outs["removed NCHW"]).max())


AUTHORS = " (the authors')"


def report(args, sizes, levels, fixed_base, fixed_ours_seed, fixed_ours_apply, full, fwd, maxdiff, hook_diff,
           fig: dict) -> None:
    L, N = len(STUDY_LEVELS), args.full_n
    F_base = sum(fixed_base.values())
    F_ours = fixed_ours_seed + sum(fixed_ours_apply.values())
    print(f"\nfixed costs per seed, all {L} levels (measured once at levels {fig['fixed_levels_measured']}, "
          f"the others interpolated): baseline {F_base:.2f} s "
          f"(rebuild + global_unstructured, median {median(list(fixed_base.values())):.2f} s/level), "
          f"ours {F_ours:.3f} s (model.to + init + sort {fixed_ours_seed:.3f} s, apply x {L} "
          f"{sum(fixed_ours_apply.values()):.3f} s)")
    rows, fig_b = [], {}
    for b in sizes:
        res, n = full[b], args.batches * b
        c_base, c_ours = median(res["base_img"]), median(res["ours_img"])
        parts = {p: median([x[p] for x in res["base_parts"]]) / n for p in ("decode+resize", "forward(hooks)")}
        t_meas_base = F_base + L * n * c_base
        t_meas_ours = F_ours + L * n * c_ours
        t_base, t_ours = F_base + L * N * c_base, F_ours + L * N * c_ours
        level_ratio = median(res["base_pass"]) / median(res["ours_pass"])
        f = {nm: median(v) for nm, v in fwd.get(b, {}).items()}
        fig_b[str(b)] = {
            "images_per_level": n, "base_ms_per_image": c_base * 1000, "ours_ms_per_image": c_ours * 1000,
            "base_decode_ms_per_image": parts["decode+resize"] * 1000,
            "base_forward_hooks_ms_per_image": parts["forward(hooks)"] * 1000,
            "base_pass_s": median(res["base_pass"]), "ours_pass_s": median(res["ours_pass"]),
            "measured_level_ratio": level_ratio, "ratio_at_measured_size": t_meas_base / t_meas_ours,
            "base_full_h": t_base / 3600, "ours_full_h": t_ours / 3600, "ratio_full": t_base / t_ours}
        if f:  # the forward alone at the same batch size: ours' pass against the pure forward limit
            fig_b[str(b)]["ours_over_limit"] = c_ours / f["ours' settings (limit)"]
        rows.append([b, n, spread([t * 1000 for t in res["base_img"]]), spread([t * 1000 for t in res["ours_img"]]),
                     f"{level_ratio:.2f}x", f"{t_meas_base / t_meas_ours:.2f}x",
                     f"{t_base / 3600:.2f} h / {t_ours / 3600:.2f} h", f"**{t_base / t_ours:.2f}x**"])
    print_table(["batch", "images/level", "baseline ms/image", "ours ms/image", "measured per-level ratio",
                 f"ratio at {args.batches} batches x 20 levels", f"extrapolated to {N:,}: baseline / ours",
                 f"ratio at {N:,}"], rows,
                title=f"per-image costs (median over {args.rounds} rounds x {len(levels)} levels; the data loop of "
                      "each pass over its images) and the per-seed extrapolation")
    fig_fwd = {}
    for b, times in fwd.items():
        f = {nm: median(v) for nm, v in times.items()}
        fig_fwd[str(b)] = {"images": args.batches * b, "ms_per_image": {nm: v * 1000 for nm, v in f.items()},
                           "hooks_over_removed": f["hooked NCHW"] / f["removed NCHW"]}
        print_table(["forward alone, same inputs in memory", "ms/image, median [min-max]", "vs hooked"],
                    [[nm, spread([t * 1000 for t in v]), f"{f['hooked NCHW'] / median(v):.2f}x"]
                     for nm, v in times.items()],
                    title=f"forward alone, batch {b}, {args.batches * b} images, {args.rounds} rounds rotating")
        print(f"hooked / removed (same pruned model, NCHW) = {fig_fwd[str(b)]['hooks_over_removed']:.3f}")
    for b in sizes:
        f = fig_b[str(b)]
        print(f"batch {b}: baseline per image: forward(hooks) {f['base_forward_hooks_ms_per_image']:.1f} ms + decode "
              f"{f['base_decode_ms_per_image']:.1f} ms; ours per image {f['ours_ms_per_image']:.1f} ms"
              + (f" = {f['ours_over_limit']:.3f} x the limit" if "ours_over_limit" in f else ""))
    print(f"\nmax |p_baseline - p_ours| = {maxdiff:.3g} (fp32, levels {levels}, every batch size); "
          f"max |p_hooked - p_removed| = {hook_diff:.3g}")
    head = str(max(sizes))
    print(f"headline: extrapolated full-test-set ({N:,} images, 20 levels, one seed) ratio at batch "
          f"{head}{AUTHORS if head == '256' else ''}: {fig_b[head]['ratio_full']:.2f}x (measured: per-image costs at {fig_b[head]['images_per_level']} "
          f"images/level and every fixed cost; extrapolated: the image count)")
    fig.update(arch=args.arch, image_size=args.image_size, levels=levels, rounds=args.rounds, batches=args.batches,
               full_n=N, forward=fig_fwd, fixed_base_s=F_base, fixed_ours_s=F_ours, batch=fig_b, max_abs_prob_diff=maxdiff,
               max_abs_prob_diff_hooks_vs_removed=hook_diff, headline_batch=int(head),
               headline_ratio_full=fig_b[head]["ratio_full"])


def ap_check(args) -> None:
    """bf16 autocast vs fp32 on the synthetic study data: probabilities and per-class AP."""
    from cxrprune.stats.metrics import average_precision
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
