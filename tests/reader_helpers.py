"""A tiny synthetic study for the reader-study tests, written under a temporary folder.

Layout as the pipeline leaves it: ``data/prepared/<name>/`` (test labels, uint8 cache,
truth, meta), ``data/raw/<name>/images/*.png`` (a few originals; the rest come from the
cache) and ``metrics/<name>/pies.csv``. PIEs are mostly the flipped or degraded images, so
the simulated readers should rate them lower.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrprune.core.classes import NIH_CXR_LT_CLASSES, NO_FINDING
from cxrprune.core.config import Params, from_dict

NAME = "tiny"
CLASSES = list(NIH_CXR_LT_CLASSES)


def make_study(root: Path, n_test: int = 80, n_pies: int = 16, cache_size: int = 48, png_size: int = 96,
               originals: int = 30, seed: int = 0) -> dict:
    """Write the fixture under ``root``; returns ids, PIE flags and truth for assertions."""
    rng = np.random.default_rng(seed)
    ids = [f"{i + 1:08d}_000.png" for i in range(n_test)]
    labels = np.zeros((n_test, len(CLASSES)), dtype=np.int8)
    for i in range(n_test):
        k = rng.choice([0, 1, 1, 2, 3])
        if k == 0:
            labels[i, 0] = 1  # No Finding
        else:
            cols = rng.choice(np.arange(1, len(CLASSES)), size=k, replace=False, p=_tail_weights())
            labels[i, cols] = 1
    flipped = (rng.random(n_test) < 0.25).astype(int)
    quality = np.where(rng.random(n_test) < 0.3, rng.uniform(0.1, 0.6, n_test), 1.0)
    # PIEs: the images with the most label noise and the poorest quality
    badness = flipped * 1.0 + (1 - quality) + rng.normal(0, 0.15, n_test)
    pie_idx = np.argsort(-badness, kind="stable")[:n_pies]
    is_pie = np.zeros(n_test, dtype=bool)
    is_pie[pie_idx] = True

    prepared = root / "data" / "prepared" / NAME
    prepared.mkdir(parents=True)
    df = pd.DataFrame({"image_id": ids, "patient_id": [i[:8] for i in ids]})
    for j, c in enumerate(CLASSES):
        df[c] = labels[:, j]
    df.to_parquet(prepared / "labels_test.parquet", index=False)
    yy, xx = np.mgrid[0:cache_size, 0:cache_size]
    cache = np.stack([((xx * (3 + i % 5) + yy * (i % 7)) % 256).astype(np.uint8) for i in range(n_test)])
    np.save(prepared / "images_test.npy", cache)
    truth = pd.DataFrame({"image_id": ids, "split": "test", "flipped": flipped,
                          "flipped_class": ["Effusion" if f else "" for f in flipped], "quality": quality,
                          "degradation": ["none" if q == 1 else "blur" for q in quality]})
    truth.to_parquet(prepared / "truth.parquet", index=False)
    (prepared / "meta.json").write_text(json.dumps({"classes": CLASSES, "image_size": cache_size,
                                                    "source": "nih-cxr-lt", "counts": {"test": n_test}}))
    raw = root / "data" / "raw" / NAME / "images"
    raw.mkdir(parents=True)
    for i in range(min(originals, n_test)):
        yy, xx = np.mgrid[0:png_size, 0:png_size]
        img = ((xx + yy * 2 + i * 9) % 256).astype(np.uint8)
        Image.fromarray(img, "L").save(raw / ids[i])
    metrics = root / "metrics" / NAME
    metrics.mkdir(parents=True)
    pies = pd.DataFrame({"image_id": ids, "spearman": np.where(is_pie, -0.5, 0.8) + rng.normal(0, 0.05, n_test),
                         "is_pie": is_pie.astype(int), "flipped": flipped, "quality": quality})
    pies.sort_values("spearman").to_csv(metrics / "pies.csv", index=False)
    return {"ids": ids, "is_pie": is_pie, "flipped": flipped, "quality": quality, "labels": labels}


def _tail_weights() -> np.ndarray:
    w = 1.0 / np.arange(1, len(CLASSES))
    return w / w.sum()


def params_for(root: Path, **reader) -> Params:
    cfg = {"per_group": 5, "forms": 3, "seed": 1, "stratify": True, "image_size": 128, "simulate": True,
           "simulated_readers": 2, "answers_dir": "reader_answers"}
    cfg.update(reader)
    return from_dict({
        "data": {"name": NAME, "root": f"data/raw/{NAME}", "image_size": 48},
        "reader": cfg,
        "mlflow": {"experiment": "reader-test", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
    })


__all__ = ["CLASSES", "NAME", "NO_FINDING", "make_study", "params_for"]
