"""Names every part of the scale-out package shares: where logs go, the final stage states,
the local MLflow UI address and the error type."""

from __future__ import annotations

from cxrprune.core.errors import CxrpruneError
from cxrprune.core.layout import RAY_LOG_DIR

LOG_DIR = RAY_LOG_DIR
SUMMARY = "summary.json"
FINAL = ("done", "failed", "blocked", "up to date", "cancelled")
LOCAL_UI = "http://127.0.0.1:5000"  # where `make ui` serves a local sqlite store


class ScaleoutError(CxrpruneError):
    """Some per-seed stages failed or the run could not be planned."""
