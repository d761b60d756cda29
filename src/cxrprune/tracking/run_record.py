"""``run.json`` in a trained seed's folder: which MLflow run holds the seed's training, written
and read here only. The train stage writes it; ``tracking.runs`` finds the run by it and
``scaleout.progress`` links to it. Plain JSON and no torch, so that the ``repro --ray``
driver reads it without importing the training code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cxrprune.core.atomic import write_json


def write_run_record(path: str | os.PathLike, run_id: str, experiment_id: str, tracking_uri: str) -> None:
    """``run.json``: which MLflow run holds this seed's training."""
    write_json(Path(path), {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri})


def read_run_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """``run.json`` as written by :func:`write_run_record`, or None when absent or unreadable
    (the record is a convenience: the run is then found by the checkpoint's md5)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None
