"""Masks for all 20 sparsity levels of a ResNet50: ours vs global_unstructured per level.

Baseline (the authors' approach): for every level a fresh model (constructor +
``load_state_dict``) and ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``
over every Conv2d/Linear weight (concatenation of all importance scores, ``topk`` over 23.5M
weights, ``weight_orig`` + ``weight_mask`` per layer and a forward pre-hook). Timed with and
without the rebuild.

Ours: ``cxrprune.compression.masks.GlobalPruner`` as the prune stage uses it (channels-last model):
one copy of the weights, one sort of |w| values, then for each level an in-place zeroing
of the model's weights and a count of its zeros.

Memory: each measurement runs in a fresh subprocess. After the model is built, freed heap
is trimmed (``malloc_trim``) and the kernel's resident-set high-water mark is reset
(``/proc/self/clear_refs`` = 5); peak extra = ``VmHWM`` after the 20 levels minus ``VmRSS``
before them. RSS sees every allocation (torch's CPU allocator, numpy, Python), unlike
tracemalloc. Subprocesses, interleaved: runs alternate ours / baseline (the order flips
each repeat), ``--repeats`` times; medians are reported.
One more (untimed) baseline worker checks that both give the same masks at every level
(differences are only allowed among weights tied at the threshold).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import (
    STUDY_LEVELS,
    median,
    peak_rss_bytes,
    print_table,
    record,
    reset_peak_rss,
    rss_bytes,
    spread,
)


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def worker(method: str, arch: str, check: bool) -> dict:
    from torch.nn.utils import prune as tprune

    from cxrprune.compression.masks import GlobalPruner
    from cxrprune.training.models import build_model, prunable_parameters

    torch.manual_seed(0)
    model = build_model(arch, 20).eval()
    state = model.state_dict()
    if method == "ours":
        model = model.to(memory_format=torch.channels_last)  # as prune_and_predict does
    n = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    _trim()
    reset_peak_rss()
    before = rss_bytes()
    out = {"method": method, "weights": n}
    start = time.perf_counter()
    if method == "ours":
        pruner = GlobalPruner(model)
        pruner.reset("l1")
        for k in STUDY_LEVELS:
            pruner.apply(k)
        out["seconds"] = time.perf_counter() - start
        out["peak_extra"] = peak_rss_bytes() - before
    else:
        t_prune = 0.0
        masks = {}
        for k in STUDY_LEVELS:
            fresh = build_model(arch, 20)
            fresh.load_state_dict(state)
            t = time.perf_counter()
            params = prunable_parameters(fresh)
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=k)
            t_prune += time.perf_counter() - t
            if check:
                masks[k] = torch.cat([m.weight_mask.flatten().bool() for m, _ in params])
            model = fresh  # the previous level's model is released here, as in the authors' loop
        out["seconds"] = time.perf_counter() - start
        out["seconds_prune_only"] = t_prune
        out["peak_extra"] = peak_rss_bytes() - before
        if check:
            out.update(_compare(arch, state, masks))
    return out


def _compare(arch: str, state: dict, masks: dict) -> dict:
    """Ours vs torch's masks at every level: positions that differ, and whether they are all
    tied at the level's threshold magnitude."""
    from cxrprune.compression.masks import GlobalPruner
    from cxrprune.training.models import build_model

    model = build_model(arch, 20)
    model.load_state_dict(state)
    model = model.to(memory_format=torch.channels_last)
    pruner = GlobalPruner(model)
    w = pruner.original.abs()
    pruner.reset("l1")
    differ, only_ties = 0, True
    for k in STUDY_LEVELS:
        pruner.apply(k)
        ours = torch.cat([p.detach().flatten() != 0 for p in pruner.params])  # logical order
        ours |= w == 0  # exact zeros in the dense weights count as pruned in neither path's sense
        ref = masks[k] | (w == 0)
        d = ours != ref
        differ += int(d.sum())
        if d.any():
            threshold = w[~masks[k]].max()
            only_ties &= bool(torch.all(w[d] == threshold))
    return {"mask_positions_differing": differ, "differences_only_at_ties": only_ties}


def _run(method: str, arch: str, check: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--worker", method, "--arch", arch] + (["--check"] if check else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-check", action="store_true", help="skip the mask-equality run (one more baseline)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.arch, args.check)))
        return
    with record("bench_masks", args) as fig:
        _measure(args, fig)


def _measure(args, fig: dict) -> None:
    results: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for r in range(args.repeats):
        for method in (("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")):
            res = _run(method, args.arch)
            results[method].append(res)
            print(f"  repeat {r} {method}: {res['seconds']:.2f} s, peak extra {res['peak_extra'] / 1e9:.3f} GB",
                  flush=True)
    ours, base = results["ours"], results["baseline"]
    n = ours[0]["weights"]
    t_ours = [x["seconds"] for x in ours]
    t_base = [x["seconds"] for x in base]
    t_base_p = [x["seconds_prune_only"] for x in base]
    m_ours = [x["peak_extra"] / 1e9 for x in ours]
    m_base = [x["peak_extra"] / 1e9 for x in base]
    print(f"\n{args.arch}: {n:,} prunable weights ({n * 4 / 1e6:.0f} MB fp32), all {len(STUDY_LEVELS)} levels "
          f"0.00..0.95, {args.repeats} repeats each, alternating, one subprocess per measurement")
    print_table(["path", "seconds, median [min-max]", "peak extra RSS GB, median [min-max]"], [
        ["baseline: rebuild + global_unstructured per level", spread(t_base), spread(m_base)],
        ["baseline: global_unstructured calls only", spread(t_base_p), ""],
        ["ours: GlobalPruner (init + 1 sort + 20 in-place levels)", spread(t_ours), spread(m_ours)],
    ])
    print(f"\nspeed-up vs global_unstructured calls only: {median(t_base_p) / median(t_ours):.1f}x; "
          f"vs rebuild + prune: {median(t_base) / median(t_ours):.1f}x")
    print(f"memory: ours {median(m_ours):.3f} GB vs baseline {median(m_base):.3f} GB "
          f"(targets: < 2 s and < 0.6 GB extra)")
    print(f"ours' own buffers: original weights {n * 4 / 1e9:.3f} GB + sorted |w| {n * 4 / 1e9:.3f} GB")
    fig.update(weights=n, repeats=args.repeats, baseline_s=median(t_base), baseline_prune_only_s=median(t_base_p),
               ours_s=median(t_ours), speedup=median(t_base) / median(t_ours),
               baseline_peak_extra_gb=median(m_base), ours_peak_extra_gb=median(m_ours))
    if args.no_check:
        return
    chk = _run("baseline", args.arch, check=True)  # untimed: it keeps 20 masks for the comparison
    fig.update(mask_positions_differing=chk["mask_positions_differing"])
    print(f"masks: {chk['mask_positions_differing']} positions differ over 20 levels "
          f"(only among weights tied at the threshold: {chk['differences_only_at_ties']})")


if __name__ == "__main__":
    main()
