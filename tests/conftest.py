"""Shared by every test module: thread count under pytest-xdist, the one reproduced tiny
study, and the order in which pytest-xdist hands out the files.

`make test` runs two test processes on a 2-core machine. Each would otherwise start torch
with one thread per core, four threads on two cores, and OpenMP threads spinning on a
shared core slow everyone down; one thread per test process keeps both cores busy without
that. Stage subprocesses set their own count (`train.threads` in the tiny params).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> tuple[Path, str]:
    """``make repro`` of the tiny study in a clone of the repository, built once per test run
    and shared by the xdist workers (the first to ask builds it under a file lock, the other
    waits for it). Returns the workspace and the output of ``make repro``. Read it; to change
    anything or run a DVC command in it, work on ``workspaces.copy_workspace`` of it."""
    from workspaces import clone_repo, make

    base = tmp_path_factory.getbasetemp()
    # under pytest-xdist: pytest-N/, shared by gw0, gw1 (without it, this run's own folder)
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    ws, record = shared / "tiny-study", shared / "tiny-study.json"
    with open(shared / "tiny-study.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not record.exists():
                t0 = time.monotonic()
                try:
                    clone_repo(ws)
                    out, error = make("repro", ws), None
                except AssertionError as exc:  # recorded: the other worker reports it, not rebuilds
                    out, error = "", str(exc)
                record.write_text(json.dumps({"output": out, "error": error, "seconds": time.monotonic() - t0}))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    doc = json.loads(record.read_text())
    if doc["error"]:
        raise AssertionError(f"the shared tiny study (make repro in {ws}) failed:\n{doc['error']}")
    return ws, doc["output"]


# pytest-xdist (--dist loadfile) gives each worker one file, then a second, then one more each
# time it finishes one, in this order. The end-to-end files come first, longest first, so
# that the last files to run are short ones. Only the first file needs the shared tiny study
# (and builds it); the next two do not, so with 2 or 3 workers none starts by waiting for it.
FIRST = [
    "test_pipeline.py",  # builds the shared tiny study
    "test_determinism.py",  # its own workspace: kill and resume a training
    "test_train_speed.py",  # torch.compile, in child processes
    "test_scaleout.py",  # a Ray run beside the shared study
    "test_scaleout_cluster.py",  # Ray cluster, Ctrl-C, DVC remote: copies of the shared study
    "test_pie_treatment.py",
    "test_robustness_queue.py",  # its own workspace
    "test_compare.py",
    "test_readme_commands.py",
]


def pytest_collection_modifyitems(config, items):
    """The files of :data:`FIRST` in that order, then the other files with end-to-end
    (``slow``) tests, then the rest, each file's tests in their own order."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def key(item) -> tuple[int, int]:
        name = item.path.name
        if name in FIRST:
            return (0, FIRST.index(name))
        return (1 if item.path in slow_files else 2, 0)

    items.sort(key=key)  # stable: order within a file kept
