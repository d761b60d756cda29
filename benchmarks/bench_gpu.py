"""The default study's GPU work on one CUDA device: time per seed, accuracy, reproducibility.

For every seed of ``params.yaml`` on the default data (``data/prepared/<data.name>``, built by
``dvc repro prepare``): ``train_model`` with ``params.yaml``'s ``train`` section (precision
``auto``: bf16 on a GPU with native bf16), then ``prune_and_predict`` with its ``prune`` section
(every method and level; the first seed timed, as the prune stage does). Reported per seed:
the wall time of each, and the dense model's test mAP beside the committed CPU run's
(``metrics/<data.name>/map_by_seed.csv``; a GPU run is another float summation order and,
with bf16, another precision, so its models differ as two seeds' do, not by rounding).
The CPU side of the time comparison is the committed ``benchmarks/results/bench_repro.json``
(its train and prune stage sums over the same seeds), from the machine it names.

Reproducibility: seed ``--repeat-seed`` is trained again with ``train.deterministic`` true
(the default: cuDNN's deterministic kernels, no autotuning) and twice with false (autotuned),
and each pair's weights compared bit for bit; the epoch times of both settings are shown.
The same for one epoch of the paper's ResNet50 at 256 px over random images.

    PYTHONPATH=src python benchmarks/bench_gpu.py [--seeds 0 1] [--repeat-seed 0]

Writes ``benchmarks/results/bench_gpu.{txt,json}``. Needs a CUDA device: on a machine
without one it stops with that message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import pandas as pd
import torch

from common import RESULTS, ROOT, print_table, record, timed

from cxrprune.compression.methods.base import Context
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.config import TrainConfig, load_params
from cxrprune.core.numerics import autocast_option, resolve_precision
from cxrprune.core.runtime import pick_device, set_threads
from cxrprune.datasets.prepare import load_meta, load_split, split_reader
from cxrprune.stats.metrics import average_precision
from cxrprune.training.loop import adam, train_epoch, train_model
from cxrprune.training.models import build_model


def same_weights(sa: dict, sb: dict) -> tuple[int, int]:
    """(tensors that differ, tensors) between two state dicts."""
    return sum(not torch.equal(sa[k], sb[k]) for k in sa), len(sa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="default: params.yaml's seeds")
    ap.add_argument("--repeat-seed", type=int, default=0)
    ap.add_argument("--r50-images", type=int, default=1024, help="images of the ResNet50 reproducibility epoch")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device on this machine; this benchmark measures the GPU paths")
    with record("bench_gpu", args) as figures:
        run(args, figures)


def run(args, figures: dict) -> None:
    params = load_params()
    cfg = params.train
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    prep = params.layout.prepared
    classes = load_meta(prep)["classes"]
    train_labels, train_images = load_split(prep, "train")
    val_labels, val_images = load_split(prep, "val")
    test_labels, test_images = load_split(prep, "test")
    y_test = test_labels[classes].to_numpy()
    x_test = torch.from_numpy(np.array(test_images))
    data = (train_labels, train_images, val_labels, val_images, classes)
    seeds = params.seeds if args.seeds is None else args.seeds
    print(f"{device} ({torch.cuda.get_device_name(device)}), cuDNN {torch.backends.cudnn.version()}; "
          f"train precision {cfg.precision} -> {precision}; {len(train_images)} train / {len(val_images)} val / "
          f"{len(test_images)} test images at {train_images.shape[-1]} px; methods {params.prune.methods}, "
          f"{len(params.prune.levels)} levels")
    cpu_map = _committed_dense_map(params)
    torch.zeros(1, device=device)  # CUDA context start-up outside the first seed's time

    rows, per_seed, models = [], [], {}
    for seed in seeds:
        result, train_s = timed(train_model, cfg, seed, *data, sync_cuda=True)
        # the trained weights, before pruning touches anything (the reproducibility check compares them)
        models[seed] = {k: v.clone() for k, v in result.model.state_dict().items()}
        context = Context(seed, params.prune, cfg, device, int(x_test.shape[-1]), split_reader(prep, classes))
        efficiency: list[dict] = []
        levels, prune_s = timed(
            prune_and_predict, result.model, x_test, params.prune.methods, params.prune.levels, seed,
            params.prune.batch_size, device, autocast=autocast_option(params.prune.autocast),
            allow_tf32=params.prune.allow_tf32, context=context, efficiency=efficiency, timed=seed == seeds[0],
            sync_cuda=True)
        dense = next(r for r in levels if (r.method, r.sparsity) == ("l1", 0.0))
        gpu_map = float(np.nanmean(average_precision(y_test, dense.probs)))
        epochs = len(result.history)
        rows.append([seed, f"{train_s:.1f}", epochs, f"{result.history['seconds'].median():.2f}", f"{prune_s:.1f}",
                     len(levels), f"{gpu_map:.3f}", f"{cpu_map.get(seed, float('nan')):.3f}"])
        per_seed.append({"seed": seed, "train_s": train_s, "epochs": epochs,
                         "epoch_s_median": float(result.history["seconds"].median()), "prune_s": prune_s,
                         "predicted_models": len(levels), "dense_test_map": gpu_map,
                         "committed_cpu_dense_test_map": cpu_map.get(seed), "best_epoch": result.best_epoch,
                         "efficiency": efficiency})
        print(f"seed {seed}: train {train_s:.1f} s ({epochs} epochs), prune+predict {prune_s:.1f} s "
              f"({len(levels)} models), dense test mAP {gpu_map:.3f}", flush=True)
    print_table(["seed", "train s", "epochs", "epoch s (median)", "prune+predict s", "models", "dense test mAP",
                 "committed CPU run's"], rows,
                title=f"the default study's per-seed GPU work on {torch.cuda.get_device_name(device)}")
    figures["per_seed"] = per_seed
    figures["precision"] = precision
    figures["gpu_train_s"] = sum(r["train_s"] for r in per_seed)
    figures["gpu_prune_s"] = sum(r["prune_s"] for r in per_seed)
    cpu = _committed_cpu_stage_sums()
    if cpu is not None and sorted(seeds) == sorted(params.seeds):
        figures["cpu_reference"] = cpu
        print(f"all {len(seeds)} seeds: train {figures['gpu_train_s']:.0f} s, prune {figures['gpu_prune_s']:.0f} s on "
              f"the GPU; the committed CPU run (benchmarks/results/bench_repro.json, {cpu['cpu_model']}): train "
              f"{cpu['train_s']:.0f} s, prune {cpu['prune_s']:.0f} s (stage processes, start-up included)")

    figures["reproducibility"] = _reproducibility(cfg, args.repeat_seed, data, models.get(args.repeat_seed))
    figures["reproducibility_resnet50"] = _reproducibility_r50(cfg, device, len(classes), args.r50_images)


def _reproducibility(cfg: TrainConfig, seed: int, data, first: dict | None) -> dict:
    out, rows = {}, []
    for deterministic in (True, False):
        c = dataclasses.replace(cfg, deterministic=deterministic)
        runs = [] if (deterministic and first is not None) else [train_model(c, seed, *data)]
        runs.append(train_model(c, seed, *data))
        a = first if (deterministic and first is not None) else runs[0].model.state_dict()
        differ, total = same_weights(a, runs[-1].model.state_dict())
        epoch_s = float(np.median(runs[-1].history["seconds"]))
        out["deterministic" if deterministic else "autotuned"] = {
            "tensors_differing": differ, "tensors": total, "epoch_s_median": epoch_s}
        rows.append([deterministic, f"{differ} of {total}", f"{epoch_s:.2f}"])
    print_table(["train.deterministic", "tensors differing between two trainings", "epoch s (median)"], rows,
                title=f"seed {seed} trained twice per setting")
    return out


def _reproducibility_r50(cfg: TrainConfig, device, n_classes: int, n_images: int) -> dict:
    """The paper's model at 256 px: one epoch over random images twice per setting (a larger
    model, where cuDNN's autotuned backward kernels have more to choose from)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (n_images, 256, 256), dtype=np.uint8)).to(device)
    y = torch.from_numpy((rng.random((n_images, n_classes)) < 0.1).astype(np.float32)).to(device)
    precision = resolve_precision(cfg.precision, device)
    out, rows = {}, []
    for deterministic in (True, False):
        c = dataclasses.replace(cfg, arch="resnet50", deterministic=deterministic)
        states, seconds = [], []
        for _ in range(2):
            torch.manual_seed(0)
            model = build_model("resnet50", n_classes).to(device, memory_format=torch.channels_last)
            _, s = timed(
                train_epoch, model, adam(model.parameters(), c), torch.nn.BCEWithLogitsLoss(), x, y, c,
                torch.Generator().manual_seed(0), device, precision=precision, sync_cuda=True)
            states.append(model.state_dict())
            seconds.append(s)
        differ, total = same_weights(*states)
        key = "deterministic" if deterministic else "autotuned"
        out[key] = {"tensors_differing": differ, "tensors": total, "epoch_s": seconds}
        rows.append([deterministic, f"{differ} of {total}", f"{seconds[1]:.2f}"])
    print_table(["train.deterministic", "tensors differing between two epochs", "epoch s (second run)"], rows,
                title=f"resnet50 at 256 px, {precision}, one epoch over {n_images} random images, twice per setting")
    return out


def _committed_dense_map(params) -> dict[int, float]:
    path = ROOT / "metrics" / params.data.name / "map_by_seed.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    dense = table[(table["method"] == "l1") & (table["level"] == 0.0)]
    return {int(r.seed): float(r.map) for r in dense.itertuples()}


def _committed_cpu_stage_sums() -> dict | None:
    path = RESULTS / "bench_repro.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    groups = rec["figures"]["stage_groups_s"]
    return {"train_s": groups["train"], "prune_s": groups["prune"], "cpu_model": rec["machine"]["cpu_model"],
            "file": "benchmarks/results/bench_repro.json"}


if __name__ == "__main__":
    main()
