"""Helpers of the ``cxrprune repro --ray`` tests (test_scaleout.py, test_scaleout_cluster.py):
running the command in a workspace and reading what it and DVC recorded."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workspaces import HANG_S, Hung, env

from cxrprune.core.layout import RAY_LOG_DIR

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray: pip install ray")

BIN = Path(sys.executable).parent
LOGS = RAY_LOG_DIR


def cxr_env(**extra: str) -> dict:
    e = env()
    e.pop("OMP_NUM_THREADS", None)  # the tasks get theirs from the scheduler
    e["RAY_USAGE_STATS_ENABLED"] = "0"
    e.update(extra)
    return e


def repro_ray(ws: Path, *args: str, extra_env: dict | None = None, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """``cxrprune repro --progress lines ARGS``; the timeout is a hang detector."""
    cmd = [str(BIN / "cxrprune"), "repro", "--progress", "lines", *args]
    t0 = time.monotonic()
    try:
        return subprocess.run(cmd, cwd=ws, env=cxr_env(**(extra_env or {})), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise Hung(f"`cxrprune repro {' '.join(args)}` in {ws} still running after {time.monotonic() - t0:.0f} s "
                   f"(hang detector {timeout:.0f} s):\n{str(exc.stderr or '')[-3000:]}") from None


def summary(ws: Path) -> dict:
    return json.loads((ws / LOGS / "summary.json").read_text())


def lock(ws: Path) -> dict:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"]


def hashes(entry: dict, kind: str) -> dict:
    return {d["path"]: d.get("md5") for d in entry.get(kind, [])}


def dvc_status(ws: Path, *targets: str) -> dict:
    """``dvc status`` of the root pipeline (without targets DVC checks every dvc.yaml, the
    opt-in study's too, which these tests never run)."""
    out = subprocess.run([str(BIN / "dvc"), "status", "--json", *(targets or ["dvc.yaml"])], cwd=ws, env=env(),
                         capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, check=True).stdout
    return json.loads(out or "{}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_param(ws: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params[section][key] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
