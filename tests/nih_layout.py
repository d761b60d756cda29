"""Build tiny datasets in the exact NIH-CXR-LT layout for tests (images and label CSVs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrprune.core.classes import NIH_CXR_LT_CLASSES

CLASSES = list(NIH_CXR_LT_CLASSES)


def write_nih_dataset(root: Path, per_split: int = 24, size: int = 40, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every class positive at least once per split; two images per patient."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    frames = {}
    patient = 0
    for split in ("train", "val", "test"):
        rows = []
        for i in range(per_split):
            if i % 2 == 0:
                patient += 1
            labels = np.zeros(len(CLASSES), dtype=int)
            labels[i % len(CLASSES)] = 1
            if i % 5 == 3:
                labels[1 + (i * 7) % (len(CLASSES) - 1)] = 1
                labels[0] = 0
            image_id = f"{patient:08d}_{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(root / "images" / image_id)
            rows.append({"id": image_id, **dict(zip(CLASSES, labels)), "subj_id": f"{patient:08d}"})
        df = pd.DataFrame(rows, columns=["id", *CLASSES, "subj_id"])
        df.to_csv(root / f"miccai2023_nih-cxr-lt_labels_{split}.csv", index=False)
        frames[split] = df
    return frames
