"""Validate a dataset and write the prepared tables and the uint8 image cache.

Training and prediction read ``images_<split>.npy`` (uint8, N x S x S, memory-mapped)
instead of decoding and resizing PNGs on every pass: on NIH-CXR-LT that is 1024x1024 PNGs
decoded once instead of once per epoch and per sparsity level.

Preparation is resumable. The cache is built in a work folder beside the output,
``<parent>/.<name>.partial/``: ``images_<split>.npy`` (the final .npy files, filled in
place), ``done_<split>.bin`` (one byte per chunk of images, set only after that chunk's
pixels are written and flushed) and ``fingerprint.json`` (a hash of the inputs: source,
image size, label files' contents, the image lists, the arrays of array sources). An
interrupted or failed run leaves the folder; the next run with the same fingerprint
decodes only the chunks not marked done, a changed fingerprint starts over. On success the
tables and ``meta.json`` are added and the folder replaces the output in one rename.
Images are assumed unchanged between an interrupted run and its resume (hashing 112,120
PNGs would cost as much as decoding them); to redo everything after replacing images, delete
the work folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from cxrprune.core import checksums
from cxrprune.core.atomic import replace_dir, write_json
from cxrprune.core.config import DataConfig
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer
from cxrprune.datasets.sources import (
    SPLITS,
    ArraySource,
    SourceData,
    print_notes,
    read_source,
)

_CHUNK = 64  # images per worker task and per done-mark: amortises process overhead, keeps progress smooth
_FORMAT = 1  # version of the work-folder layout; part of the fingerprint
_MAX_FAILED_CHUNKS = 16  # stop decoding after this many chunks with unreadable images
_SHOWN = 3  # offending images named in one error message


def partial_dir(out_dir: str | os.PathLike) -> Path:
    """The work folder of an unfinished preparation of ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.partial")


def prepare_dataset(cfg: DataConfig, out_dir: str | os.PathLike | None = None) -> dict:
    """Read ``cfg.source`` at ``cfg.root``, validate it, and write ``out_dir`` atomically.

    Resumes an interrupted run of the same inputs (see the module docstring). Unreadable
    images do not stop the other images from being cached: every chunk is tried (up to
    ``_MAX_FAILED_CHUNKS`` failing ones), then one :class:`DataError` names the bad images
    and the finished work stays in the work folder for the next run.
    """
    out_dir = Path(out_dir) if out_dir is not None else cfg.prepared_dir
    data = read_source(cfg.source, cfg.root, cfg.options)
    print_notes(data)
    validate(data)
    work = partial_dir(out_dir)
    fingerprint, inputs = input_fingerprint(data, cfg)
    _open_work(work, fingerprint, inputs)
    counts, failures, failed_chunks = {}, [], 0
    for split in SPLITS:
        df = data.splits[split]
        images = data.arrays[split] if data.arrays is not None else df["path"].tolist()
        bad = fill_cache(work / f"images_{split}.npy", work / f"done_{split}.bin", images, cfg.image_size,
                         cfg.workers, locators=df["path"].tolist(), desc=f"prepare {split}")
        counts[split] = len(df)
        failures += [msg for _, msg in bad]
        failed_chunks += _failed_chunks(bad)
        if failed_chunks >= _MAX_FAILED_CHUNKS:
            break
    if failures:
        shown = "; ".join(failures[:_SHOWN])
        raise DataError(f"{len(failures)} image(s) could not be prepared: {shown}"
                        f"{' ...' if len(failures) > _SHOWN else ''}. The images prepared so far are kept in "
                        f"{work}; fix or remove the listed images and rerun to resume")
    for split in SPLITS:
        table = data.splits[split].drop(columns=["path"]).reset_index(drop=True)
        table.to_parquet(work / f"labels_{split}.parquet", index=False)
    if data.truth is not None:
        data.truth.to_parquet(work / "truth.parquet", index=False)
    meta = {"classes": data.classes, "image_size": cfg.image_size, "source": cfg.source, "counts": counts}
    # Size and sha256 of every file, checked when read (cxrprune.core.checksums; load_split).
    meta["files"] = checksums.records(work, [*(f"{k}_{s}.{e}" for s in SPLITS for k, e in
                                               (("labels", "parquet"), ("images", "npy"))), "truth.parquet"])
    write_json(work / "meta.json", meta)
    for f in (*work.glob("done_*.bin"), work / "fingerprint.json"):
        f.unlink()
    replace_dir(work, out_dir)
    return meta


def validate(data: SourceData) -> None:
    """Dataset-level checks; each failure is one DataError naming the file and ids."""
    seen_ids: dict[str, str] = {}
    patient_split: dict[str, str] = {}
    for split in SPLITS:
        df, path = data.splits[split], data.label_files[split]
        if len(df) == 0:
            raise DataError(f"{path}: no {split} rows; every split needs images")
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
    if data.arrays is not None:
        for split in SPLITS:
            if len(data.arrays[split]) != len(data.splits[split]):
                raise DataError(f"{data.label_files[split]}: {len(data.arrays[split])} {split} images for "
                                f"{len(data.splits[split])} label rows")
        return
    missing = [(split, p) for split in SPLITS for p in data.splits[split]["path"] if not os.path.isfile(p)]
    if missing:
        per_split = ", ".join(f"{n} listed in {data.label_files[s].name}" for s in SPLITS
                              if (n := sum(1 for m in missing if m[0] == s)))
        raise DataError(f"{len(missing)} listed image(s) missing ({per_split}), e.g. "
                        f"{[p for _, p in missing[:_SHOWN]]}; check data.root or restore them (`dvc pull`)")


# --- the resumable cache ---------------------------------------------------------------


def input_fingerprint(data: SourceData, cfg: DataConfig) -> tuple[str, dict]:
    """A hash of everything the cache depends on, and the readable inputs behind it."""
    files = {str(p): _file_digest(p) for p in dict.fromkeys(data.label_files.values())}
    rows = {}
    for split in SPLITS:
        df = data.splits[split]
        h = hashlib.sha256()
        for image_id, path in zip(df["image_id"], df["path"]):
            h.update(f"{image_id}\t{path}\n".encode())
        rows[split] = h.hexdigest()
    inputs = {"format": _FORMAT, "chunk": _CHUNK, "source": cfg.source, "image_size": cfg.image_size,
              "classes": list(data.classes), "label_files": files, "rows": rows,
              "arrays": {s: a.describe() for s, a in data.arrays.items()} if data.arrays is not None else None}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(), inputs


def _file_digest(path: Path) -> str:
    """sha256 of a file; of a zip (.npz) its members' names, CRCs and sizes (no re-reading GBs)."""
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            listing = sorted(f"{i.filename}:{i.CRC:08x}:{i.file_size}" for i in zf.infolist())
        return "zip:" + hashlib.sha256("\n".join(listing).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_work(work: Path, fingerprint: str, inputs: dict) -> None:
    """Keep ``work`` when it was started from the same inputs, else start it afresh."""
    stamp = work / "fingerprint.json"
    if work.exists():
        try:
            old = json.loads(stamp.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old == fingerprint:
            print(f"prepare: resuming the unfinished preparation in {work}", file=sys.stderr)
            return
        why = "its inputs changed" if old else "it has no readable fingerprint"
        print(f"prepare: discarding the unfinished preparation in {work} ({why}); starting over", file=sys.stderr)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_json(stamp, {"fingerprint": fingerprint, "inputs": inputs})


def fill_cache(cache: Path, done_file: Path, images: Sequence[str] | ArraySource, size: int, workers: int = 0,
               locators: Sequence[str] | None = None, desc: str = "images") -> list[tuple[int, str]]:
    """Decode every image not yet marked done into the ``.npy`` file ``cache`` (uint8 (N, size, size)).

    ``images`` is a list of file paths or an :class:`ArraySource`; ``locators`` name the
    images in messages. Each finished chunk is written, flushed to disk, then marked in
    ``done_file``. Returns ``(chunk, message)`` for every image that could not be decoded
    (its chunk stays unmarked).
    """
    n = len(images)
    n_chunks = math.ceil(n / _CHUNK)
    locators = list(locators) if locators is not None else [str(p) for p in images]
    offset, fresh = _open_cache(cache, (n, size, size))
    done = _read_done(done_file, n_chunks, reset=fresh)
    pending = [i for i in range(n_chunks) if not done[i]]
    n_done = n - sum(min(_CHUNK, n - i * _CHUNK) for i in pending)
    if n_done and pending:
        print(f"{desc}: resuming, {n_done} of {n} images already prepared", file=sys.stderr)
    failures: list[tuple[int, str]] = []
    n_workers = workers or _cpu_count()
    fd_cache = os.open(cache, os.O_RDWR)
    fd_done = os.open(done_file, os.O_RDWR)
    bar = tqdm(total=n, initial=n_done, desc=desc, unit="img", leave=False, disable=None)

    def task(i: int) -> tuple:
        start, stop = i * _CHUNK, min(n, (i + 1) * _CHUNK)
        names = locators[start:stop]
        payload = images.read(start, stop) if hasattr(images, "read") else list(images[start:stop])
        return payload, names

    def finish(i: int, arr: np.ndarray | None, errors: list[str]) -> None:
        if errors:
            failures.extend((i, e) for e in errors)
            return
        _pwrite_all(fd_cache, arr.tobytes(), offset + i * _CHUNK * size * size)
        _fdatasync(fd_cache)  # pixels on disk before the mark that says so
        os.pwrite(fd_done, b"\x01", i)
        bar.update(len(arr))
        _after_chunk(cache, i)

    try:
        with bar:
            if n_workers == 1 or len(pending) <= 1:
                for i in pending:
                    if _failed_chunks(failures) >= _MAX_FAILED_CHUNKS:
                        break
                    finish(i, *decode_chunk(*task(i), size))
            else:
                _fill_parallel(pending, task, finish, size, n_workers, failures)
    finally:
        os.close(fd_cache)
        os.close(fd_done)
        if hasattr(images, "close"):
            images.close()
    return failures


def _fill_parallel(pending, task, finish, size, n_workers, failures) -> None:
    """Chunks in a process pool, at most 2 per worker in flight, written as they finish."""
    pool = ProcessPoolExecutor(n_workers)
    try:
        todo = iter(pending)
        in_flight: dict[Future, int] = {}

        def submit_next() -> None:
            if _failed_chunks(failures) >= _MAX_FAILED_CHUNKS:
                return
            i = next(todo, None)
            if i is not None:
                in_flight[pool.submit(decode_chunk, *task(i), size)] = i

        for _ in range(2 * n_workers):
            submit_next()
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=in_flight.__getitem__):
                finish(in_flight.pop(fut), *fut.result())
                submit_next()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _after_chunk(cache: Path, index: int) -> None:
    """Called after each chunk is safely written (a hook for tests and instrumentation)."""


_fdatasync = getattr(os, "fdatasync", os.fsync)


def _failed_chunks(failures: list[tuple[int, str]]) -> int:
    return len({i for i, _ in failures})


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _open_cache(path: Path, shape: tuple[int, int, int]) -> tuple[int, bool]:
    """Reuse the .npy file when its header fits, else create it; returns (data offset, created)."""
    if path.exists():
        try:
            existing = np.load(path, mmap_mode="r")
            if existing.shape == shape and existing.dtype == np.uint8:
                return int(existing.offset), False
        except (OSError, ValueError):
            pass
        path.unlink()
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = int(arr.offset)
    del arr
    return offset, True


def _read_done(path: Path, n_chunks: int, reset: bool = False) -> bytearray:
    """The done marks; all cleared when the cache file was (re)created or the marks do not fit."""
    if not reset and path.exists() and path.stat().st_size == n_chunks:
        return bytearray(path.read_bytes())
    with open(path, "wb") as f:
        f.write(bytes(n_chunks))
    return bytearray(n_chunks)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


# --- decoding ---------------------------------------------------------------------------


def load_images(df: pd.DataFrame, size: int, workers: int = 0, desc: str = "images") -> np.ndarray:
    """Decode and resize every ``df.path`` to a uint8 array ``(N, size, size)`` in memory.

    The first unreadable image raises its :class:`DataError` (no resume; see
    :func:`prepare_dataset` for the resumable cache).
    """
    paths = df["path"].tolist()
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    n_workers = workers or _cpu_count()
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=None) as bar:
        if n_workers == 1 or len(chunks) <= 1:
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


def decode_chunk(payload: list[str] | np.ndarray, names: list[str], size: int) -> tuple[np.ndarray | None, list[str]]:
    """One chunk: file paths (decoded) or pixel rows (converted), each to uint8 ``(size, size)``.

    Returns ``(array, [])``, or ``(None, messages)`` naming every image of the chunk that
    failed; the others are still tried so one run reports them all.
    """
    out = np.empty((len(names), size, size), dtype=np.uint8)
    errors = []
    for j, name in enumerate(names):
        try:
            if isinstance(payload, np.ndarray):
                out[j] = array_image(payload[j], size, name)
            else:
                out[j] = load_image(payload[j], size)
        except DataError as exc:
            errors.append(str(exc))
    return (None, errors) if errors else (out, [])


def load_image(path: str, size: int) -> np.ndarray:
    """One image as uint8 ``(size, size)``: 16-bit scaled to 8-bit, colour to luminance."""
    try:
        with Image.open(path) as img:
            img.load()
            return _finish(img, size, path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc}); replace or remove it") from None


def array_image(pixels: np.ndarray, size: int, name: str) -> np.ndarray:
    """One image from an array row: (H, W) or (H, W, 1|3), uint8 or uint16; same conversion as files."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.dtype == np.uint8 and pixels.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(pixels), "L")
    elif pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
        img = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    elif pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2 and pixels.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(pixels.astype("<u2")), "I;16")
    else:
        raise DataError(f"{name}: pixel array of shape {pixels.shape} and dtype {pixels.dtype} is not an "
                        f"8/16-bit gray or 8-bit RGB image")
    return _finish(img, size, name)


def _finish(img: Image.Image, size: int, name: str) -> np.ndarray:
    img = _to_gray8(img, name)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def _to_gray8(img: Image.Image, path: str) -> Image.Image:
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max()
        return Image.fromarray(np.round(arr * (255.0 / hi if hi > 0 else 0)).astype(np.uint8), "L")
    if img.mode in ("RGB", "RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1"):
        return img.convert("L")
    raise DataError(f"{path}: image mode {img.mode!r} is not supported (use 8/16-bit gray or RGB)")


def load_meta(prepared_dir: str | os.PathLike) -> dict:
    path = Path(prepared_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {producer('prepared')}` first") from None
    except json.JSONDecodeError:
        raise DataError(f"{path}: damaged; rerun `dvc repro {producer('prepared')} --force`") from None


def load_label_tables(prepared_dir: str | os.PathLike, *splits: str) -> tuple[list[str], list[pd.DataFrame]]:
    """The class names and the label tables of ``splits`` (checked like :func:`load_split`): what a
    study's report reads when it needs labels but no pixels."""
    return load_meta(prepared_dir)["classes"], [load_split(prepared_dir, split)[0] for split in splits]


def load_split(prepared_dir: str | os.PathLike, split: str, verify: str = "sample") -> tuple[pd.DataFrame, np.ndarray]:
    """The labels table and the memory-mapped uint8 image cache of one split, checked.

    ``verify`` compares both files with the sizes and hashes ``meta.json`` recorded when they
    were written: ``"sample"`` (sampled hash, milliseconds), ``"full"`` (whole-file sha256,
    about 1.8 GB/s) or ``"none"``; see :mod:`cxrprune.core.checksums`.
    """
    prepared_dir = Path(prepared_dir)
    labels_path = prepared_dir / f"labels_{split}.parquet"
    images_path = prepared_dir / f"images_{split}.npy"
    recorded = _recorded_files(prepared_dir)
    for path in (labels_path, images_path):
        if path.exists():
            checksums.verify(path, recorded.get(path.name), verify, producer("prepared"))
    try:
        labels = pd.read_parquet(labels_path)
        images = np.load(images_path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: not found; run `dvc repro {producer('prepared')}` first") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{prepared_dir}: damaged prepared data ({exc}); "
                        f"rerun `dvc repro {producer('prepared')} --force`") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] != len(labels):
        raise DataError(f"{images_path}: expected uint8 (N={len(labels)}, S, S), found {images.dtype} "
                        f"{images.shape}; rerun `dvc repro {producer('prepared')} --force`")
    return labels, images


def _recorded_files(prepared_dir: Path) -> dict:
    """``meta.json["files"]``, or {} when absent or unreadable (load_meta reports the latter)."""
    try:
        files = json.loads((prepared_dir / "meta.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def split_reader(prepared, classes: list[str]):
    """``split(name) -> (uint8 images, float32 labels)``, read once, when a compression method
    asks (int8 calibrates on ``val``, l1_finetune trains on ``train``)."""
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in cache:
            labels, images = load_split(prepared, name, verify="full")
            cache[name] = np.array(images), labels[classes].to_numpy(np.float32, copy=True)
        return cache[name]

    return split
