"""Training speed (issue 14): images/s per setting, and time to today's validation mAP.

Part 1, throughput: ``cxrprune.training.loop.train_epoch`` (the loop itself: uint8 cache, batch
augmentation, forward, BCE, backward, Adam) on the default data's training images, per
setting (precision x batch size; ``--compile`` adds torch.compile rows, compile time
reported apart). Settings rotate within each repeat (the order changes every repeat);
medians of images/s with the CPU share the process got.

Part 2, time to accuracy on the default data (``data/prepared/<data.name>``, built by
``dvc repro prepare``; ``--prepared DIR`` for another prepared cache, e.g. the default data
at 48 px), per seed: *today's loop* (the parameters before issue 14: 16 epochs, patience 5,
batch 128, Adam 1e-3 constant, fp32, per-tensor Adam) against *the new default*
(``params.yaml``'s ``train`` section, with ``--new``'s changes if given). The two trainings
alternate **epoch by epoch**: each
runs one epoch through ``train_model``, its resume state is kept, and it continues later
from that state (resumed training is bit-identical to uninterrupted training, tested in
tests/test_determinism.py), so both sides see the same machine load over the run. The
target is today's final validation mAP: the val mAP of the epoch today's loop keeps
(lowest validation loss). Reported: the time each side needs until the model *its loop
would keep* reaches it (sum of the ``seconds`` column, training + validation of every epoch
up to the first epoch after which the kept model, had training stopped there, has val mAP
>= the target), the time to finish (what the study pays), and the val mAP of the epoch each
side keeps at the end. Why the kept model: the loop keeps the best-validation-loss epoch,
whose val mAP can sit below that of a later (or earlier) epoch; an epoch that crosses the
target but is not kept is a model nobody gets. The kept epoch after every epoch is the
loop's own ``best_epoch`` from its resume state (the selection rule is not re-implemented
here). The first epoch of any kind at or above the target is still shown ("any epoch
reached"; before this change it was the reported time).

Part 3: ResNet50 at 256 px, batch 16, fp32 vs bf16 (the paper's model; on a GPU the row
to read is bf16 images/s).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_train_speed.py [--seeds 0 1] [--compile] \
        [--prepared DIR --tag NAME]

Writes ``benchmarks/results/bench_train_speed[-NAME].{txt,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch
from torch import nn

from common import median, print_table, record, spread

from cxrprune.core.config import TrainConfig, load_params
from cxrprune.training.models import build_model
from cxrprune.core.runtime import pick_device, set_threads
from cxrprune.core.numerics import cpu_features, resolve_precision
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.training.loop import adam, train_epoch, train_model

# The training loop as it was before issue 14 (params.yaml of that time).
TODAY = dict(arch="resnet10", epochs=16, patience=5, batch_size=128, lr=1e-3, schedule="constant",
             warmup_epochs=0.0, precision="fp32", compile=False, fused_adam=False)
# The proposed default (issue 14), applied over params.yaml's train section: half the epochs,
# twice the peak rate after a one-epoch warm-up, cosine decay, precision by device.
# The new side by default: params.yaml's train section as it is (the current default).
NEW = ""


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class _Pause(Exception):
    pass


def one_epoch(cfg: TrainConfig, seed: int, data, state: dict | None) -> tuple[dict, float, float]:
    """Run the next epoch of a training (from ``state``); returns (state, wall s, CPU s)."""
    saved = {}

    def keep(s):
        saved.update(s)
        raise _Pause

    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        train_model(cfg, seed, *data, resume=state, on_checkpoint=keep)
    except _Pause:
        pass
    return saved, time.perf_counter() - wall, cpu_seconds() - cpu


def finished(cfg: TrainConfig, state: dict | None) -> bool:
    return state is not None and (state["stopped"] or state["epoch"] == cfg.epochs - 1)


def time_to_target(history: list[dict], kept_epochs: list[int], target: float) -> tuple[int, float] | None:
    """``(epoch, seconds)`` of the first epoch after which the kept model reaches ``target``.

    ``kept_epochs[i]``: the epoch whose weights the loop would return had training stopped
    after ``history[i]`` (its ``best_epoch`` then; -1: none yet). Seconds are summed over
    every epoch up to that one. ``kept_epochs = [r["epoch"] for r in history]`` gives the
    first epoch of any kind at or above the target. None: not reached.
    """
    val_map = {r["epoch"]: r["val_map"] for r in history}
    t = 0.0
    for row, kept in zip(history, kept_epochs, strict=True):
        t += row["seconds"]
        if kept in val_map and val_map[kept] >= target:
            return row["epoch"], t
    return None


def time_to_accuracy(sides: dict[str, TrainConfig], seed: int, data) -> dict[str, dict]:
    """Train every side epoch by epoch (alternating), then time each to today's kept val mAP."""
    states: dict[str, dict | None] = {k: None for k in sides}
    kept: dict[str, list[int]] = {k: [] for k in sides}  # the loop's best_epoch after each epoch
    wall = {k: 0.0 for k in sides}
    cpu = {k: 0.0 for k in sides}
    order = list(sides)
    turn = 0
    while not all(finished(sides[k], states[k]) for k in sides):
        for name in order[turn % len(order):] + order[:turn % len(order)]:  # who goes first rotates
            if finished(sides[name], states[name]):
                continue
            states[name], w, c = one_epoch(sides[name], seed, data, states[name])
            wall[name] += w
            cpu[name] += c
            kept[name].append(int(states[name]["best_epoch"]))
            row = states[name]["history"][-1]
            print(f"  seed {seed} {name:<11} epoch {row['epoch']:>2}: val loss {row['val_loss']:.4f}, "
                  f"val mAP {row['val_map']:.4f}, {row['seconds']:.1f} s (CPU share {c / w:.2f})", flush=True)
        turn += 1
    out = {}
    for name, st in states.items():
        hist = st["history"]
        best = next(r for r in hist if r["epoch"] == st["best_epoch"])
        out[name] = {"history": hist, "best_epoch": st["best_epoch"], "kept_map": best["val_map"],
                     "kept_epochs": kept[name], "total_s": sum(r["seconds"] for r in hist), "wall_s": wall[name],
                     "cpu_s": cpu[name], "epochs_run": len(hist)}
    target = out["today"]["kept_map"]
    for res in out.values():
        res["reached"] = time_to_target(res["history"], res["kept_epochs"], target)
        res["any_reached"] = time_to_target(res["history"], [r["epoch"] for r in res["history"]], target)
    return out


def throughput(settings: list[tuple], x, y, repeats: int, device, arch: str) -> dict:
    """images/s of ``train_epoch`` per setting ``(precision, batch, compile, fused_adam[, deterministic])``
    (``deterministic``: ``train.deterministic``, default true; it matters on CUDA only)."""
    loss_fn = nn.BCEWithLogitsLoss()
    runs = {}
    for setting in settings:
        prec, bs, comp, fused, *rest = setting
        torch.manual_seed(0)
        model = build_model(arch, y.shape[1]).to(device, memory_format=torch.channels_last)
        cfg = TrainConfig(arch=arch, batch_size=bs, precision=prec, compile=comp, fused_adam=fused,
                          deterministic=rest[0] if rest else True)
        opt = adam(model.parameters(), cfg)
        step_model = torch.compile(model) if comp else model
        gen = torch.Generator().manual_seed(0)
        first = time.perf_counter()
        train_epoch(step_model, opt, loss_fn, x, y, cfg, gen, device, precision=prec)  # warm-up (compiles)
        runs[setting] = dict(fn=lambda m=step_model, o=opt, c=cfg, g=gen, p=prec: train_epoch(
            m, o, loss_fn, x, y, c, g, device, precision=p), first=time.perf_counter() - first, rates=[], share=[])
    keys = list(runs)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            w, c = time.perf_counter(), cpu_seconds()
            runs[k]["fn"]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            w = time.perf_counter() - w
            runs[k]["rates"].append(x.shape[0] / w)
            runs[k]["share"].append((cpu_seconds() - c) / w)
    return runs


def _label(key: tuple) -> str:
    p, b, c, f = key
    return f"{p}/{b}{'/compiled' if c else ''}{'/fused Adam' if f else ''}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--new", default=NEW, metavar="KEY=VALUE,...",
                    help="the new side of part 2: params.yaml's train with these changes (default: %(default)s)")
    ap.add_argument("--images", type=int, default=1024, help="images per throughput measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows to part 1")
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "accuracy", "resnet50"])
    ap.add_argument("--r50-images", type=int, default=32)
    ap.add_argument("--candidate", action="append", default=[], metavar="KEY=VALUE,...",
                    help="another side in part 2: the new default with these train params changed")
    ap.add_argument("--prepared", default=None, metavar="DIR",
                    help="a prepared dataset other than params.yaml's (e.g. the default data at 48 px)")
    ap.add_argument("--tag", default="", help="results file suffix: benchmarks/results/bench_train_speed-TAG.*")
    args = ap.parse_args()
    with record("bench_train_speed" + (f"-{args.tag}" if args.tag else ""), args) as figures:
        run(args, figures)


def run(args, figures: dict) -> None:
    params = load_params()
    new = dataclasses.replace(params.train, **_parse(args.new, params.train)) if args.new else params.train
    set_threads(new.threads)
    device = pick_device(new.device)
    flags = ", ".join(k for k, v in cpu_features().items() if v) or "none"
    print(f"CPU lower-precision flags: {flags}; precision auto -> {resolve_precision('auto', device)} on {device}")
    today = dataclasses.replace(new, **TODAY)
    print(f"today's loop: {TODAY}")
    print("new (params.yaml train + --new): " + ", ".join(f"{k}={getattr(new, k)}" for k in TODAY) + "\n")

    prep = args.prepared or params.data.prepared_dir
    classes = load_meta(prep)["classes"]
    train_labels, train_images = load_split(prep, "train")
    val_labels, val_images = load_split(prep, "val")
    data = (train_labels, train_images, val_labels, val_images, classes)

    if "throughput" not in args.skip:
        n = min(args.images, len(train_images))
        x = torch.from_numpy(np.array(train_images[:n])).to(device)
        y = torch.from_numpy(train_labels[classes].to_numpy(np.float32, copy=True)[:n]).to(device)
        precs = ["fp32"] + [p for p in ("bf16", "fp16") if _supported(p, device)]
        sizes = sorted({*args.batch_sizes, 128, new.batch_size})
        # Every precision x batch with the per-tensor Adam of today's loop, and each precision at
        # the default batch with the fused Adam.
        settings = [(p, b, False, False) for p in precs for b in sizes]
        settings += [(p, new.batch_size, False, True) for p in precs]
        if args.compile:
            settings += [(p, new.batch_size, True, new.fused_adam) for p in precs]
            # An empty compile cache: the first epoch of a compiled row then shows what a first
            # training on a new machine pays (torch's on-disk cache would hide it on reruns).
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
            print(f"torch.compile cache: {os.environ['TORCHINDUCTOR_CACHE_DIR']} (empty)")
        runs = throughput(settings, x, y, args.repeats, device, new.arch)
        print_table(["precision", "batch", "compile", "fused Adam", "images/s, median [min-max]", "CPU share",
                     "first epoch s"],
                    [[p, b, c, f, spread(r["rates"]), f"{median(r['share']):.2f}", f"{r['first']:.1f}"]
                     for (p, b, c, f), r in runs.items()],
                    title=f"part 1: {new.arch} at {train_images.shape[-1]} px, train_epoch over {n} images, "
                          f"{args.repeats} repeats, settings rotated, device {device}")
        base = median(runs[("fp32", 128, False, False)]["rates"])
        print("relative to fp32 batch 128 (per-tensor Adam): " + ", ".join(
            f"{_label(k)} {median(r['rates']) / base:.2f}x" for k, r in runs.items()))
        figures["image_size"] = int(train_images.shape[-1])
        figures["throughput"] = [{"precision": p, "batch": b, "compile": c, "fused_adam": f,
                                  "images_per_s": median(r["rates"]), "rates": r["rates"],
                                  "relative": median(r["rates"]) / base, "first_epoch_s": r["first"]}
                                 for (p, b, c, f), r in runs.items()]

    if "accuracy" not in args.skip:
        print(f"\npart 2: time until the kept model has today's final validation mAP, {prep} "
              f"({train_images.shape[-1]} px, {len(train_images)} train / {len(val_images)} val images), "
              "epochs alternated")
        figures["image_size"] = int(train_images.shape[-1])
        figures["prepared"] = str(prep)
        figures["today"] = {k: getattr(today, k) for k in TODAY}
        figures["new"] = {k: getattr(new, k) for k in TODAY}
        figures["sides"] = []
        rows, ratios, finish = [], {}, {}
        for seed in args.seeds:
            sides = {"today": today, "new": new}
            for i, spec in enumerate(args.candidate):
                sides[f"candidate {i + 1}"] = dataclasses.replace(new, **_parse(spec, new))
                if seed == args.seeds[0]:
                    print(f"candidate {i + 1}: {spec}")
            res = time_to_accuracy(sides, seed, data)
            target = res["today"]["kept_map"]
            for name in sides:
                r = res[name]
                reached, anyr = [f"epoch {x[0]}, {x[1]:.1f} s" if x else "not reached"
                                 for x in (r["reached"], r["any_reached"])]
                rows.append([seed, name, f"{target:.4f}", reached, anyr, r["epochs_run"], f"{r['total_s']:.1f}",
                             f"{r['cpu_s'] / r['wall_s']:.2f}", r["best_epoch"], f"{r['kept_map']:.4f}"])
                # reached_*: the kept model (the loop's best_epoch) at or above the target;
                # any_epoch_reached_*: any epoch's model (what reached_* meant before).
                figures["sides"].append({"seed": seed, "side": name, "target_val_map": target,
                                         "reached_epoch": r["reached"][0] if r["reached"] else None,
                                         "reached_s": r["reached"][1] if r["reached"] else None,
                                         "any_epoch_reached_epoch": r["any_reached"][0] if r["any_reached"] else None,
                                         "any_epoch_reached_s": r["any_reached"][1] if r["any_reached"] else None,
                                         "epochs_run": r["epochs_run"], "total_s": r["total_s"],
                                         "kept_epoch": r["best_epoch"], "kept_val_map": r["kept_map"],
                                         "kept_epochs": r["kept_epochs"],
                                         "val_map": [h["val_map"] for h in r["history"]],
                                         "seconds": [h["seconds"] for h in r["history"]]})
            for name in list(sides)[1:]:
                if res[name]["reached"] and res["today"]["reached"]:
                    ratios.setdefault(name, []).append(res[name]["reached"][1] / res["today"]["reached"][1])
                finish.setdefault(name, []).append(res[name]["total_s"] / res["today"]["total_s"])
        print_table(["seed", "side", "target val mAP", "kept model reached", "any epoch reached", "epochs run",
                     "time to finish s", "CPU share", "kept epoch", "kept val mAP"], rows)
        for name in finish:
            if name in ratios:
                print(f"{name} / today, time until the kept model has today's val mAP: "
                      f"{', '.join(f'{r:.3f}' for r in ratios[name])} (median {median(ratios[name]):.3f}; "
                      f"target <= 0.6)")
            else:
                print(f"{name} / today, time until the kept model has today's val mAP: not reached")
            print(f"{name} / today, time to finish: {', '.join(f'{r:.3f}' for r in finish[name])} "
                  f"(median {median(finish[name]):.3f})")
        figures["reached_by"] = "kept model"  # results without this key timed the first epoch at the target
        figures["time_to_target_ratio"] = {k: median(v) for k, v in ratios.items()}
        figures["time_to_finish_ratio"] = {k: median(v) for k, v in finish.items()}

    if "resnet50" not in args.skip:
        rng = np.random.default_rng(0)
        size = 256
        x = torch.from_numpy(rng.integers(0, 256, (args.r50_images, size, size), dtype=np.uint8)).to(device)
        y = torch.from_numpy((rng.random((args.r50_images, len(classes))) < 0.1).astype(np.float32)).to(device)
        precs = ["fp32"] + [p for p in ("bf16",) if _supported(p, device)]
        bs = 16 if device.type == "cpu" else 128
        # On CUDA each precision with cuDNN autotuning too: what train.deterministic costs at this scale.
        kernels = (True, False) if device.type == "cuda" else (True,)
        runs = throughput([(p, bs, False, new.fused_adam, d) for p in precs for d in kernels], x, y,
                          max(2, args.repeats - 1), device, "resnet50")
        print_table(["precision", "batch", "deterministic", "images/s, median [min-max]", "CPU share"],
                    [[p, b, d, spread(r["rates"]), f"{median(r['share']):.2f}"]
                     for (p, b, _, _, d), r in runs.items()],
                    title=f"part 3: resnet50 at {size} px, {args.r50_images} images per measurement, device {device}")
        figures["resnet50_256px"] = {p: median(r["rates"]) for (p, _, _, _, d), r in runs.items() if d}
        if device.type == "cuda":
            figures["resnet50_256px_autotuned"] = {p: median(r["rates"]) for (p, _, _, _, d), r in runs.items()
                                                   if not d}


def _parse(spec: str, base: TrainConfig) -> dict:
    """``"lr=0.002,epochs=6"`` -> typed values of those TrainConfig fields."""
    out = {}
    for item in spec.split(","):
        key, value = item.split("=", 1)
        kind = type(getattr(base, key))
        out[key] = value.lower() == "true" if kind is bool else kind(value)
    return out


def _supported(precision: str, device) -> bool:
    try:
        resolve_precision(precision, device)
        return True
    except Exception:  # noqa: BLE001 - a refused precision is simply not measured
        return False


if __name__ == "__main__":
    main()
