"""MLflow tracking: one store per workspace, one run per seed, one child per (method, k).

The store defaults to ``sqlite:///<repo root>/mlflow.db``. Inside a queued DVC experiment
the working directory is a temporary copy, so the root comes from ``$DVC_ROOT`` when set;
otherwise every queued experiment would log into a throw-away store. (Checked with dvc
3.67: inside ``dvc exp run --queue`` stages, ``DVC_ROOT`` is the parent workspace, the
working directory ``<root>/.dvc/tmp/exps/tmp...``, ``DVC_EXP_NAME`` the experiment.)

Concurrent writers (``dvc queue start -j 2``, Ray tasks) share one sqlite file. MLflow sets
a 20 s busy timeout on every session; on top of that :func:`start` creates (or migrates) the
store and the experiment under an exclusive lock, because several processes creating a new
store at once break its schema migration, and writes are retried when sqlite still reports
"database is locked". A new experiment's artifacts go to ``<repo root>/mlruns/`` (MLflow's
default is ``./mlruns`` of whichever process created it: a temporary copy in a queued
experiment).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from cxrprune.core.config import MlflowConfig, Params
from cxrprune.core.errors import TrackingError

_BATCH = 1000  # MLflow accepts at most 1,000 metrics per log_batch call
_LOCKED_RETRIES = 6  # on top of MLflow's 20 s sqlite busy timeout
T = TypeVar("T")


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
            f"(README, 'When things go wrong') or unset MLFLOW_TRACKING_URI to use the local store") from None


def start(cfg: MlflowConfig) -> str:
    """Point MLflow at the store and the experiment; returns the experiment id."""
    import mlflow

    uri = tracking_uri(cfg)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with store_lock(uri):
            exp = retry_locked(lambda: _get_or_create_experiment(cfg.experiment, uri))
            mlflow.set_experiment(experiment_id=exp)
    except TrackingError:
        raise
    except Exception as exc:  # MlflowException, sqlalchemy errors, connection errors
        raise TrackingError(f"MLflow store {uri} cannot be used ({type(exc).__name__}: {_first_line(exc)})") from None
    return exp


def _get_or_create_experiment(name: str, uri: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(f"experiment {name!r} is deleted in this store; restore it "
                                f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or set "
                                f"mlflow.experiment to another name")
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:"):  # local store: artifacts beside it, not in a temporary copy
        location = (repo_root() / "mlruns" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path if path.startswith("/") else os.path.join(os.getcwd(), path))


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock across processes of this machine while a sqlite store is created or
    migrated (a no-op for other stores). The lock file is in the temporary folder, named
    after the store's path, so the workspace gets no extra file."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    name = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"cxrprune-mlflow-{name}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def retry_locked(fn: Callable[[], T], retries: int = _LOCKED_RETRIES) -> T:
    """Call ``fn``; when sqlite says the database is locked (after MLflow's own 20 s busy
    timeout), wait and try again, up to ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - MlflowException wraps sqlalchemy's OperationalError
            if attempt == retries or "database is locked" not in str(exc):
                raise
            time.sleep(min(0.5 * 2 ** attempt, 8.0))
    raise AssertionError("unreachable")  # pragma: no cover


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SafeLogger:
    """MLflow calls that must not lose finished work (training, predictions): the first
    failure is reported once, naming the command that writes the missing records later, and
    later calls are skipped (a server that went away would make each one wait)."""

    def __init__(self, seed: int, what: str = "training"):
        self.seed, self.what = seed, what
        self.failure: str | None = None

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T | None:
        if self.failure is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - MlflowException, requests and sqlalchemy errors
            self.failure = f"{type(exc).__name__}: {_first_line(exc)}"
            print(f"cxrprune: warning: MLflow logging failed ({self.failure}); the {self.what} goes on and its "
                  f"outputs are kept; write the missing records later with `cxrprune log-mlflow --seed "
                  f"{self.seed}`", file=sys.stderr)
            return None

    def report(self) -> None:
        """After the work: repeat the warning, and close the active run without more waiting."""
        if self.failure is None:
            return
        print(f"cxrprune: warning: the MLflow records of seed {self.seed} are incomplete; when the tracking "
              f"store is reachable, run `cxrprune log-mlflow --seed {self.seed}`", file=sys.stderr)
        try:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.end_run(status="FAILED")
        except Exception:  # noqa: BLE001 - the store is gone; nothing more to do
            pass


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
    from cxrprune.core.checksums import file_digest

    return file_digest(path, "md5")


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log many metrics in as few requests as possible (NaN values are skipped)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    items = [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items() if v == v]
    client = MlflowClient()
    for i in range(0, len(items), _BATCH):
        retry_locked(lambda: client.log_batch(run_id, metrics=items[i:i + _BATCH], synchronous=True))


def _metric_key(name: str) -> str:
    # MLflow keys allow letters, digits, _ - . / and spaces; class names are plain words.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    client = MlflowClient()
    for i in range(0, len(items), 100):
        retry_locked(lambda: client.log_batch(run_id, params=items[i:i + 100], synchronous=True))


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


def log_summary_run(params: Params, stage: str, run_name: str, metrics: dict[str, Any], run_params: dict[str, Any],
                    artifacts: Iterable[tuple[Path, str]] = (), metric_prefix: str = "") -> str:
    """One run of a summarising stage (``analyze``, ``reader-analyze``): the numeric leaves
    of ``metrics`` (flattened with dots, under ``metric_prefix``), ``run_params``, and ``(path, artifact folder)``
    pairs (a folder is logged whole); returns the run id."""
    import mlflow

    experiment_id = start(params.mlflow)
    numeric = {k: float(v) for k, v in flatten(metric_prefix, metrics).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tags = {**context_tags(), "cxrprune_stage": stage, "dataset": params.data.name}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        run_id = run.info.run_id
        log_params(run_id, run_params)
        log_metrics(run_id, numeric)
        for path, folder in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=folder)
            elif path.is_file():
                mlflow.log_artifact(str(path), artifact_path=folder)
    return run_id


def log_tagged_run(params: Params, stage: str, run_name: str, metrics: dict[str, Any], run_params: dict[str, Any],
                   tags: Mapping[str, Any], artifacts: Iterable[tuple[Path, str]] = ()) -> None:
    """A study stage's run (:func:`log_summary_run`) with ``tags`` (treatment or arm, seed,
    study); a tracking failure is a warning: the DVC outputs are written first and rerunning
    the stage with ``--force`` logs it again."""
    try:
        from mlflow.tracking import MlflowClient

        run_id = log_summary_run(params, stage, run_name, metrics, run_params, artifacts=artifacts)
        client = MlflowClient()
        for key, value in tags.items():
            client.set_tag(run_id, key, str(value))
    except Exception as exc:  # noqa: BLE001 - MlflowException, requests and sqlalchemy errors
        print(f"cxrprune: warning: MLflow logging of {run_name} failed ({type(exc).__name__}); the outputs are "
              f"kept; rerun the stage with --force to log it", file=sys.stderr)
