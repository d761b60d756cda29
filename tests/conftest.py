"""Shared by every test module: thread count under pytest-xdist.

`make test` runs two test processes on a 2-core machine. Each would otherwise start torch
with one thread per core, four threads on two cores, and OpenMP threads spinning on a
shared core slow everyone down; one thread per test process keeps both cores busy without
that. Stage subprocesses set their own count (`train.threads` in the tiny params).
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Files with end-to-end (``slow``) tests first, the rest after, each in its own order.

    pytest-xdist (``--dist loadfile``) hands out whole files in this order: the few long files
    started first finish while the many short ones fill the other worker, instead of one long
    file running alone at the end.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within a file kept
