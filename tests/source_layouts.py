"""Build tiny datasets in the exact on-disk layouts of the mimic-cxr-lt, csv and medmnist
sources (images and label files generated here), in the style of ``nih_layout.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrprune.core.classes import MIMIC_CXR_LT_CLASSES
from cxrprune.datasets.sources import CHESTMNIST_CLASSES

MIMIC_CLASSES = list(MIMIC_CXR_LT_CLASSES)
CSV_CLASSES = ["effusion", "nodule", "mass", "fracture"]  # file order = inferred class order
SPLITS = ("train", "val", "test")


def _labels(i: int, n_classes: int) -> np.ndarray:
    """Every class positive at least once in ``n_classes`` consecutive rows, some with two."""
    y = np.zeros(n_classes, dtype=int)
    y[i % n_classes] = 1
    if i % 5 == 3:
        y[(i * 7 + 1) % n_classes] = 1
    return y


def write_mimic_dataset(root: Path, label_dir: Path | None = None, per_split: int = 24, size: int = 40,
                        seed: int = 0, patient_column: str = "subject_id") -> dict[str, pd.DataFrame]:
    """MIMIC-CXR-JPG tree ``files/p1X/p<subject>/s<study>/<dicom>.jpg`` + the CXR-LT label CSVs.

    Label CSV columns, as in the release: ``dicom_id, subject_id, study_id, ViewPosition,
    path, <19 classes>``; ``path`` relative to ``root``. Two images per study, one study per
    patient.
    """
    rng = np.random.default_rng(seed)
    label_dir = label_dir or root
    label_dir.mkdir(parents=True, exist_ok=True)
    frames = {}
    subject = 10_000_000
    for split in SPLITS:
        rows = []
        for i in range(per_split):
            if i % 2 == 0:
                subject += 7
            study = 50_000_000 + subject % 100_000 * 10 + (i % 2)
            dicom = f"{rng.integers(16**7, 16**8):08x}-{split}{i:03d}"
            rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size + 8), dtype=np.uint8), "L").save(root / rel, quality=90)
            rows.append({"dicom_id": dicom, patient_column: subject, "study_id": study, "ViewPosition": "PA",
                         "path": rel, **dict(zip(MIMIC_CLASSES, _labels(i, len(MIMIC_CLASSES))))})
        df = pd.DataFrame(rows)
        df.to_csv(label_dir / f"miccai2023_mimic-cxr-lt_labels_{split}.csv", index=False)
        frames[split] = df
    return frames


def write_csv_dataset(root: Path, per_split_files: bool = False, per_split: int = 20, size: int = 36,
                      seed: int = 0, extra_columns: bool = False) -> dict[str, pd.DataFrame]:
    """An image folder of PNGs (8-bit gray, RGB and 16-bit gray mixed) + ``labels.csv``
    (``path,patient_id,split,<classes>``) or ``labels_{split}.csv`` (no split column).

    ``extra_columns`` adds a non-class metadata column (``age``) after the classes.
    """
    rng = np.random.default_rng(seed)
    frames = {}
    patient = 0
    for split in SPLITS:
        rows = []
        for i in range(per_split):
            if i % 2 == 0:
                patient += 1
            rel = f"img/{split}/case{patient:04d}_{i:02d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            kind = i % 3
            if kind == 0:
                img = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L")
            elif kind == 1:
                img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
            else:
                img = Image.fromarray(rng.integers(0, 65536, (size, size), dtype=np.uint16))
            img.save(root / rel)
            row = {"path": rel, "patient_id": f"P{patient:05d}", "split": "validate" if split == "val" else split,
                   **dict(zip(CSV_CLASSES, _labels(i, len(CSV_CLASSES))))}
            if extra_columns:
                row["age"] = 40 + i
            rows.append(row)
        frames[split] = pd.DataFrame(rows)
    if per_split_files:
        for split, df in frames.items():
            df.drop(columns=["split"]).to_csv(root / f"labels_{split}.csv", index=False)
    else:
        pd.concat(frames.values(), ignore_index=True).to_csv(root / "labels.csv", index=False)
    return frames


def write_medmnist(root: Path, size: int = 28, per_split: int = 30, seed: int = 0,
                   name: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """A ChestMNIST-format ``.npz``: ``{split}_images`` uint8 (N, S, S), ``{split}_labels`` (N, 14)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays, out = {}, {}
    for split in SPLITS:
        images = rng.integers(0, 256, (per_split, size, size), dtype=np.uint8)
        labels = np.stack([_labels(i, len(CHESTMNIST_CLASSES)) for i in range(per_split)]).astype(np.uint8)
        labels[per_split - 1] = 0  # ChestMNIST has images without any of the 14 findings
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
        out[split] = {"images": images, "labels": labels}
    name = name or ("chestmnist.npz" if size == 28 else f"chestmnist_{size}.npz")
    np.savez_compressed(root / name, **arrays)
    return out
