"""Checksums of the prepared files, recorded in ``meta.json`` and checked when read.

``prepare`` records, for every file it writes (``images_<split>.npy``, ``labels_<split>.parquet``,
``truth.parquet``), its size, its full sha256 and a *sampled* sha256 (see :func:`sampled_sha256`)
under ``meta.json["files"]``. :func:`verify` compares a file against that record:

- ``"sample"`` (the default of :func:`cxrprune.datasets.prepare.load_split`): the size and the sampled
  hash, a few MiB read whatever the file's size (milliseconds). It catches truncation, a
  damaged header and damage to the sampled blocks, not every flipped byte in the middle.
- ``"full"``: the size and the full sha256. sha256 runs at about 1.8 GB/s here (page-cached),
  so the 7.3 GB uint8 cache of NIH-CXR-LT at 256 px takes about 4 s: the train stage, which
  reads every byte anyway, uses it; stages that read only labels use ``"sample"``.
- ``"none"``: no check.

Small files (up to :data:`SAMPLE_ALL`) are always hashed whole. A prepared folder without
``files`` in its ``meta.json`` (older preparations, imported predictions, hand-made test
fixtures) is not checked.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cxrprune.core.errors import DataError

SAMPLE_BLOCKS = 64  # evenly spaced blocks besides the head and the tail
SAMPLE_BLOCK = 64 * 1024
SAMPLE_EDGE = 1 << 20  # the first and the last MiB are always hashed (the .npy header is at the start)
SAMPLE_ALL = 4 * SAMPLE_EDGE  # files up to this size are hashed whole even in "sample" mode
MODES = ("sample", "full", "none")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a whole file, read in 4 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def full_sha256(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def sampled_sha256(path: str | os.PathLike) -> str:
    """sha256 of the size, the first and last MiB and 64 evenly spaced 64 KiB blocks.

    Reads at most about 6 MiB; a file of up to 4 MiB is hashed whole.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"size={size}\n".encode())
    with open(path, "rb") as f:
        if size <= SAMPLE_ALL:
            h.update(f.read())
            return h.hexdigest()
        offsets = [0, *(SAMPLE_EDGE + i * (size - 2 * SAMPLE_EDGE - SAMPLE_BLOCK) // max(1, SAMPLE_BLOCKS - 1)
                         for i in range(SAMPLE_BLOCKS)), size - SAMPLE_EDGE]
        lengths = [SAMPLE_EDGE, *([SAMPLE_BLOCK] * SAMPLE_BLOCKS), SAMPLE_EDGE]
        for offset, length in zip(offsets, lengths):
            h.update(os.pread(f.fileno(), length, offset))
    return h.hexdigest()


def record(path: str | os.PathLike) -> dict:
    """What ``meta.json`` keeps about one prepared file."""
    path = Path(path)
    return {"size": path.stat().st_size, "sha256": full_sha256(path), "sampled_sha256": sampled_sha256(path)}


def records(folder: str | os.PathLike, names: list[str]) -> dict[str, dict]:
    folder = Path(folder)
    return {name: record(folder / name) for name in names if (folder / name).is_file()}


def verify(path: str | os.PathLike, expected: dict | None, mode: str, stage: str) -> None:
    """Raise :class:`DataError` when ``path`` differs from its record (``None``: not recorded);
    ``stage`` is the ``dvc repro`` target that writes it."""
    if mode not in MODES:
        raise ValueError(f"verify mode must be one of {MODES}, got {mode!r}")
    if mode == "none" or not isinstance(expected, dict):
        return
    path = Path(path)
    fix = f"rerun `dvc repro {stage} --force` to rebuild it"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {fix}") from None
    if "size" in expected and size != expected["size"]:
        raise DataError(f"{path}: damaged or truncated ({size} bytes, {expected['size']} when written); {fix}")
    key, digest = ("sha256", full_sha256) if mode == "full" else ("sampled_sha256", sampled_sha256)
    if key in expected and digest(path) != expected[key]:
        raise DataError(f"{path}: damaged (its {'sha256' if mode == 'full' else 'sampled sha256'} differs from the "
                        f"one recorded when it was written); {fix}")
