"""Resume files of the train stage: the whole training state at the end of every epoch.

``dvc repro`` deletes a stage's outputs (``data/models/<name>/seed-<s>/``) before running it
again, so the resume file lives outside them, at ``data/.resume/<name>/train-seed-<s>.pt``
(git-ignored by ``data/.gitignore``, neither a dependency nor an output of any stage, so its
coming and going changes no stage's status). It holds the model and optimizer state, the
epoch, the best-so-far weights and loss, the early-stopping counter, the history rows, the
RNG states (the training ``torch.Generator``, torch's and numpy's global ones, CUDA's) and
the MLflow run id; it is written atomically (a kill leaves the previous epoch's file) and
deleted once the stage's outputs are written.

A resume file records a fingerprint of the train params, the data params and the prepared
data (:func:`fingerprint`); a file with another fingerprint is ignored with a message (its
MLflow run is marked killed) and training starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from cxrprune.core import checksums
from cxrprune.core.atomic import atomic_path
from cxrprune.core.config import Params, to_dict

FORMAT = 1


def fingerprint(params: Params, seed: int) -> str:
    """What a resumed training must share with the interrupted one: the train params, the
    data params (but ``data.workers``), the seed, and the prepared data (``meta.json``, which
    records every prepared file's sha256, and sampled hashes of the train/val files)."""
    cfg = to_dict(params)
    data = {k: v for k, v in cfg["data"].items() if k != "workers"}
    prepared = params.data.prepared_dir
    files = {}
    for name in ("meta.json", *(f"{kind}_{split}.{ext}" for split in ("train", "val")
                                for kind, ext in (("labels", "parquet"), ("images", "npy")))):
        path = prepared / name
        files[name] = checksums.sampled_sha256(path) if path.is_file() else None
    doc = {"format": FORMAT, "seed": seed, "train": cfg["train"], "data": data, "files": files}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class ResumeFile:
    """One seed's resume file: :meth:`load` what a usable one holds, :meth:`save`, :meth:`delete`."""

    def __init__(self, path: str | os.PathLike, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.superseded_run_id: str | None = None  # the MLflow run of an ignored file

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (no file, or one that cannot be used: a message says why)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
            self._ignore(f"it is unreadable ({type(exc).__name__})")
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            self._ignore("it was written by another version")
            return None
        if state.get("fingerprint") != self.fingerprint:
            self.superseded_run_id = state.get("run_id") if isinstance(state.get("run_id"), str) else None
            self._ignore("it was written with other train/data params or other prepared data")
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path, suffix=".pt") as tmp:
            torch.save({**state, "format": FORMAT, "fingerprint": self.fingerprint}, tmp)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        for folder in (self.path.parent, self.path.parent.parent):  # data/.resume/<name>, data/.resume
            try:
                folder.rmdir()
            except OSError:
                break

    def _ignore(self, why: str) -> None:
        print(f"train: ignoring the resume file {self.path} ({why}); training from the start", file=sys.stderr)
