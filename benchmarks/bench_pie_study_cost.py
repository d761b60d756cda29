"""Cost of the opt-in PIE treatment study (issue 12), from measured per-model costs.

Measures, on this machine, with the repository's params.yaml training settings: the seconds
of one training epoch (``cxrprune.training.loop.train_model``, plain and with per-image
weights) at the default synthetic size, and the seconds of one L1 prune-and-predict pass
over the default test set at every ``prune.levels``. Images are random uint8 of the default
shape: an epoch's cost does not depend on pixel values. Then estimates the whole study:

    fold models:    K x S models on (K-1)/K of the training images
    treated models: T x S models on (about) all training images
    each up to train.epochs epochs (early stopping can end sooner: an upper bound)

Writes ``benchmarks/pie_study_cost.json``. Usage (a couple of minutes on 2 cores):

    .venv/bin/python benchmarks/bench_pie_study_cost.py [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.classes import NIH_CXR_LT_CLASSES
from cxrprune.core.config import load_params
from cxrprune.training.loop import train_model

HERE = Path(__file__).resolve().parent
# The default synthetic split sizes (README: 3,063 training and 900 test images); val as prepared.
N_TRAIN, N_VAL, N_TEST = 3063, 675, 900
QUIET_CORES = 1.86


# NIH-CXR-LT at the paper's settings (STUDY.md): ResNet50, 256 px, up to 60 epochs.
NIH = {"n_train": 78506, "n_val": 12533, "n_test": 21081, "epochs": 60, "seeds": 5}
# ASSUMED, NOT MEASURED (no GPU was available to this benchmark): ResNet50 at 256 px on one
# H100-class GPU in bf16, images per second for a training step and for inference.
GPU_TRAIN_IMG_S, GPU_INFER_IMG_S = 2000.0, 6000.0


def nih_estimate(k: int, n_treatments: int, levels: int) -> dict:
    """GPU-hours of the study on NIH-CXR-LT: image counts are exact given the split sizes, the
    per-image GPU costs are the assumed throughputs above (labelled as such in the output)."""
    s, e = NIH["seeds"], NIH["epochs"]
    model_equiv = k * s * (k - 1) / k + n_treatments * s  # models on the full training split
    train_steps = model_equiv * NIH["n_train"] * e
    val = (k * s + n_treatments * s) * NIH["n_val"] * e
    infer = n_treatments * s * levels * NIH["n_test"] + k * s * 2 * NIH["n_train"] / k
    hours = (train_steps / GPU_TRAIN_IMG_S + (val + infer) / GPU_INFER_IMG_S) / 3600
    return {"assumed_gpu_train_img_s": GPU_TRAIN_IMG_S, "assumed_gpu_infer_img_s": GPU_INFER_IMG_S,
            **{f"nih_{key}": v for key, v in NIH.items()}, "train_image_steps": int(train_steps),
            "inference_images": int(val + infer), "gpu_hours_upper_bound": round(hours, 1),
            "note": "an ESTIMATE: exact image counts x ASSUMED (not measured) GPU throughputs; every model "
                    "trained for all 60 epochs (early stopping, patience 15, usually ends sooner)"}


# benchmarks/README.md, training input on the QUIET 2-core machine: the training loop ran at
# 471 img/s for a ResNet18 at 48 px, batch 128 (the default ResNet10 costs less: an upper bound).
QUIET_TRAIN_IMG_S = 471.0


def quiet_estimate(train_epochs: int, k: int, seeds: int, n_treatments: int, levels: int) -> dict:
    """Minutes of the default study on the quiet machine from the quiet training-loop rate;
    an inference pass is taken as a third of a training step (forward only)."""
    infer = 3 * QUIET_TRAIN_IMG_S
    epoch = N_TRAIN / QUIET_TRAIN_IMG_S + N_VAL / infer
    fold = k * seeds * ((k - 1) / k * epoch * train_epochs + 2 * (N_TRAIN / k) / infer)
    treated = n_treatments * seeds * (epoch * train_epochs + levels * N_TEST / infer)
    return {"quiet_train_img_s": QUIET_TRAIN_IMG_S, "epoch_seconds": round(epoch, 2),
            "fold_models_min": round(fold / 60, 1), "treated_models_min": round(treated / 60, 1),
            "study_upper_bound_min": round((fold + treated) / 60, 1),
            "note": "every model for all train.epochs; process start-up (about 10 s per stage) not included"}


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--estimate-only", action="store_true",
                    help="only (re)compute the NIH-CXR-LT estimate into the existing pie_study_cost.json")
    args = ap.parse_args()
    params = load_params(HERE.parent / "params.yaml")
    pie, cfg = params.pie_treatment, params.train
    nih = nih_estimate(len(pie.folds), len(pie.treatments), len(params.prune.levels))
    quiet = quiet_estimate(cfg.epochs, len(pie.folds), len(pie.seeds), len(pie.treatments), len(params.prune.levels))
    if args.estimate_only:
        out = json.loads((HERE / "pie_study_cost.json").read_text())
        out.update({"estimate_from_quiet_benchmark": quiet, "nih_cxr_lt_gpu_estimate": nih})
        (HERE / "pie_study_cost.json").write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(quiet, indent=2))
        return
    cfg = params.train
    classes = list(NIH_CXR_LT_CLASSES)
    size = params.data.image_size
    rng = np.random.default_rng(0)

    def split(n):
        labels = pd.DataFrame((rng.random((n, len(classes))) < 0.08).astype(np.int8), columns=classes)
        return labels, rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)

    (tl, ti), (vl, vi), (_, test) = split(N_TRAIN), split(N_VAL), split(N_TEST)
    bench_cfg = type(cfg)(**{**cfg.__dict__, "epochs": args.epochs, "patience": args.epochs})
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    rows, cpu_rows = {}, {}
    # alternated: plain, then with per-image weights (the upweight treatment's loss)
    for name in ("plain", "weighted"):
        w = None if name == "plain" else np.where(np.arange(N_TRAIN) % 20 == 0, 3.0, 1.0)
        c = cpu_seconds()
        result = train_model(bench_cfg, 0, tl, ti, vl, vi, classes, sample_weights=w)
        rows[name] = result.history["seconds"].tolist()
        cpu_rows[name] = (cpu_seconds() - c) / args.epochs
    t, c = time.perf_counter(), cpu_seconds()
    prune_and_predict(result.model, torch.from_numpy(test), ["l1"], params.prune.levels, 0, params.prune.batch_size,
                      torch.device("cpu"))
    predict_s, predict_cpu = time.perf_counter() - t, cpu_seconds() - c
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    epoch_s = float(np.median(rows["plain"] + rows["weighted"]))
    # On a shared machine wall time is inflated by other jobs; CPU time is not (much). A quiet
    # 2-core run of the training loop uses 1.86 cores (benchmarks/README.md, training input).
    epoch_cpu = float(np.median(list(cpu_rows.values())))
    quiet_epoch = epoch_cpu / QUIET_CORES
    quiet_predict = predict_cpu / QUIET_CORES
    k, s, n_t = len(pie.folds), len(pie.seeds), len(pie.treatments)
    per_level = quiet_predict / len(params.prune.levels)
    fold_s = k * s * ((k - 1) / k * quiet_epoch * cfg.epochs + per_level * 2 * (N_TRAIN / k) / N_TEST)
    treat_s = n_t * s * (quiet_epoch * cfg.epochs + quiet_predict)
    out = {
        "cpu_model": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "cpu_share": round(cpu / wall / (os.cpu_count() or 1), 3),
        "settings": {"arch": cfg.arch, "image_size": size, "batch_size": cfg.batch_size, "threads": cfg.threads,
                     "n_train": N_TRAIN, "n_val": N_VAL, "n_test": N_TEST, "train_epochs": cfg.epochs,
                     "levels": len(params.prune.levels), "folds": k, "seeds": s, "treatments": n_t},
        "epoch_seconds_wall": {name: [round(x, 3) for x in v] for name, v in rows.items()},
        "epoch_seconds_wall_median": round(epoch_s, 3),
        "epoch_cpu_seconds": {name: round(v, 3) for name, v in cpu_rows.items()},
        "epoch_seconds_quiet_estimate": round(quiet_epoch, 3),
        "prune_predict_seconds_wall": round(predict_s, 3),
        "prune_predict_cpu_seconds": round(predict_cpu, 3),
        "estimate_minutes": {"fold_models": round(fold_s / 60, 1), "treated_models": round(treat_s / 60, 1),
                             "study_upper_bound": round((fold_s + treat_s) / 60, 1),
                             "note": "quiet 2-core wall time = measured CPU seconds / 1.86 cores; every model trained for "
                                     "all train.epochs (early stopping only shortens it); process start-up, MLflow "
                                     "and the report stage (seconds each) not included"},
        "estimate_from_quiet_benchmark": quiet,
        "nih_cxr_lt_gpu_estimate": nih,
    }
    (HERE / "pie_study_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
