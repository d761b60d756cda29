"""Validate a dataset and write the prepared tables and the uint8 image cache.

Training and prediction read ``images_<split>.npy`` (uint8, N x S x S, memory-mapped)
instead of decoding and resizing PNGs on every pass: on NIH-CXR-LT that is 1024x1024 PNGs
decoded once instead of once per epoch and per sparsity level.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .atomic import atomic_dir, write_json
from .config import DataConfig
from .errors import DataError
from .sources import SPLITS, SourceData, read_source

_CHUNK = 64  # images per worker task: amortises process overhead, keeps progress smooth


def prepare_dataset(cfg: DataConfig, out_dir: str | os.PathLike | None = None) -> dict:
    """Read ``cfg.source`` at ``cfg.root``, validate it, and write ``out_dir`` atomically."""
    out_dir = Path(out_dir) if out_dir is not None else cfg.prepared_dir
    data = read_source(cfg.source, cfg.root)
    validate(data)
    counts = {}
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            df = data.splits[split]
            images = load_images(df, cfg.image_size, cfg.workers, desc=f"prepare {split}")
            np.save(tmp / f"images_{split}.npy", images)
            df.drop(columns=["path"]).reset_index(drop=True).to_parquet(tmp / f"labels_{split}.parquet", index=False)
            counts[split] = len(df)
        if data.truth is not None:
            data.truth.to_parquet(tmp / "truth.parquet", index=False)
        meta = {"classes": data.classes, "image_size": cfg.image_size, "source": cfg.source,
                "counts": counts}
        write_json(tmp / "meta.json", meta)
    return meta


def validate(data: SourceData) -> None:
    """Dataset-level checks; each failure is one DataError naming the file and ids."""
    seen_ids: dict[str, str] = {}
    patient_split: dict[str, str] = {}
    for split in SPLITS:
        df, path = data.splits[split], data.label_files[split]
        if len(df) == 0:
            raise DataError(f"{path}: no rows; every split needs images")
        dup = df["image_id"][df["image_id"].duplicated()].unique()
        if len(dup):
            raise DataError(f"{path}: duplicate id(s) {list(dup[:5])} ({len(dup)} in all); ids must be unique")
        again = [i for i in df["image_id"] if i in seen_ids]
        if again:
            raise DataError(f"{path}: id(s) {again[:5]} also appear in the {seen_ids[again[0]]} split")
        seen_ids.update(dict.fromkeys(df["image_id"], split))
        for patient in df["patient_id"].unique():
            other = patient_split.setdefault(patient, split)
            if other != split:
                shared = sorted(set(df["patient_id"]) & {p for p, s in patient_split.items() if s == other})
                raise DataError(f"{path}: patient(s) {shared[:5]} also appear in the {other} split; "
                                f"splits must be patient-disjoint")
    test, test_path = data.splits["test"], data.label_files["test"]
    empty = [c for c in data.classes if test[c].sum() == 0]
    if empty:
        raise DataError(f"{test_path}: class column(s) {empty} have no positive in the test split; "
                        f"AP is undefined for them")
    missing = [p for df in data.splits.values() for p in df["path"] if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{len(missing)} listed image(s) missing, e.g. {missing[:3]}; "
                        f"check data.root or restore them (`dvc pull`)")


def load_images(df: pd.DataFrame, size: int, workers: int = 0, desc: str = "images") -> np.ndarray:
    """Decode and resize every ``df.path`` to a uint8 array ``(N, size, size)``."""
    paths = df["path"].tolist()
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    n_workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=None)
    with bar:
        if n_workers == 1 or len(chunks) == 1:
            results = (_load_chunk(c, size) for c in chunks)
            for i, arr in enumerate(results):
                out[i * _CHUNK:i * _CHUNK + len(arr)] = arr
                bar.update(len(arr))
        else:
            with ProcessPoolExecutor(n_workers) as pool:
                for i, arr in enumerate(pool.map(_load_chunk, chunks, [size] * len(chunks))):
                    out[i * _CHUNK:i * _CHUNK + len(arr)] = arr
                    bar.update(len(arr))
    return out


def _load_chunk(paths: list[str], size: int) -> np.ndarray:
    return np.stack([load_image(p, size) for p in paths])


def load_image(path: str, size: int) -> np.ndarray:
    """One image as uint8 ``(size, size)``: 16-bit scaled to 8-bit, colour to luminance."""
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_gray8(img, path)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc}); replace or remove it") from None


def _to_gray8(img: Image.Image, path: str) -> Image.Image:
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max()
        return Image.fromarray(np.round(arr * (255.0 / hi if hi > 0 else 0)).astype(np.uint8), "L")
    if img.mode in ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr"):
        return img.convert("L")
    raise DataError(f"{path}: image mode {img.mode!r} is not supported (use 8/16-bit gray or RGB)")


def load_meta(prepared_dir: str | os.PathLike) -> dict:
    path = Path(prepared_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro prepare` first") from None
    except json.JSONDecodeError:
        raise DataError(f"{path}: damaged; rerun `dvc repro prepare --force`") from None


def load_split(prepared_dir: str | os.PathLike, split: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The labels table and the memory-mapped uint8 image cache of one split, checked."""
    prepared_dir = Path(prepared_dir)
    labels_path = prepared_dir / f"labels_{split}.parquet"
    images_path = prepared_dir / f"images_{split}.npy"
    try:
        labels = pd.read_parquet(labels_path)
        images = np.load(images_path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: not found; run `dvc repro prepare` first") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{prepared_dir}: damaged prepared data ({exc}); rerun `dvc repro prepare --force`") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] != len(labels):
        raise DataError(f"{images_path}: expected uint8 (N={len(labels)}, S, S), found {images.dtype} "
                        f"{images.shape}; rerun `dvc repro prepare --force`")
    return labels, images
