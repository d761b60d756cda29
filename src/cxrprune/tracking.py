"""MLflow tracking: one store per workspace, one run per seed, one child per (method, k).

The store defaults to ``sqlite:///<repo root>/mlflow.db``. Inside a queued DVC experiment
the working directory is a temporary copy, so the root comes from ``$DVC_ROOT`` when set;
otherwise every queued experiment would log into a throw-away store.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import MlflowConfig
from .errors import TrackingError

_BATCH = 1000  # MLflow accepts at most 1,000 metrics per log_batch call


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(cfg: MlflowConfig) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it "
            f"(see README, 'Tracking server') or unset MLFLOW_TRACKING_URI to use the local store") from None


def start(cfg: MlflowConfig) -> str:
    """Point MLflow at the store and the experiment; returns the experiment id."""
    import mlflow

    uri = tracking_uri(cfg)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.set_experiment(cfg.experiment)
    except Exception as exc:  # MlflowException, sqlalchemy errors, connection errors
        raise TrackingError(f"MLflow store {uri} cannot be used ({type(exc).__name__}: {exc})") from None
    return exp.experiment_id


def context_tags() -> dict[str, str]:
    """Where a run came from: git commit, DVC stage and experiment."""
    tags = {"git_commit": _git_commit()}
    for env, tag in (("DVC_STAGE", "dvc_stage"), ("DVC_EXP_NAME", "dvc_exp_name")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=repo_root())
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_md5(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log many metrics in as few requests as possible (NaN values are skipped)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    items = [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items() if v == v]
    client = MlflowClient()
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[i:i + _BATCH], synchronous=True)


def _metric_key(name: str) -> str:
    # MLflow keys allow letters, digits, _ - . / and spaces; class names are plain words.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    client = MlflowClient()
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100], synchronous=True)


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}`` for MLflow params."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


def find_runs(experiment_ids: Iterable[str], filter_string: str = "") -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_runs(list(experiment_ids), filter_string=filter_string, max_results=10000)
