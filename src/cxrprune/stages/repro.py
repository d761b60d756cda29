"""``cxrprune repro [--ray [ADDRESS]]``: the whole pipeline, per-seed stages in parallel on Ray.

A thin entry point over :mod:`cxrprune.scaleout`. Without ``--ray`` it is ``dvc repro``.
``--ray`` alone starts a local Ray runtime on this machine's cores; ``--ray HOST:PORT`` (or
``--ray auto``) joins a running cluster. Either way ``dvc.lock`` ends up as if ``dvc repro``
had run everything.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cxrprune.core.config import Params
from cxrprune.core.errors import CxrpruneError
from cxrprune.scaleout import common, session
from cxrprune.scaleout.resources import parse_resources
from cxrprune.core.stage import Stage


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the per-seed stages as Ray tasks in parallel: alone, on a local Ray runtime; "
                        "with HOST:PORT (or auto), on that running cluster (default: plain dvc repro)")
    p.add_argument("--targets", nargs="+", default=None, metavar="STAGE",
                   help="stages to reproduce, with their upstream (default: the whole pipeline)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="N",
                   help="seeds in flight at once (default: as many as the cluster's resources allow)")
    p.add_argument("--cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray runtime (default: all cores; ignored with ADDRESS)")
    p.add_argument("--task-cpus", type=int, default=None, metavar="N",
                   help="CPUs (and torch threads) per seed task (default: 1 GPU's share of its node, "
                        "or without GPUs all CPUs / seeds in flight)")
    p.add_argument("--task-gpus", type=int, default=None, metavar="N",
                   help="GPUs per seed task (default: 1 if the cluster has GPUs, else 0)")
    p.add_argument("--resources", default=None, metavar="JSON",
                   help="extra Ray custom resources per seed task, e.g. '{\"gpu_box\": 1}'")
    p.add_argument("--remote", default=None, metavar="NAME",
                   help="workers without the shared workspace: pull inputs from and push outputs to this "
                        "DVC remote (default: tasks run in place on a shared filesystem)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="Ray retries of a task lost with its node or worker (default: 3; a failing stage "
                        "is never retried)")
    p.add_argument("--log-dir", default=str(common.LOG_DIR), metavar="DIR",
                   help=f"per-stage logs and summary.json (default: {common.LOG_DIR})")
    p.add_argument("--progress", choices=["auto", "table", "lines", "none"], default="auto",
                   help="live view on stderr: a redrawn table (terminal), one line per change, or none")


STAGE = Stage(name="repro",
              help="dvc repro, with the per-seed stages run in parallel as Ray tasks (--ray)",
              arguments=_arguments)


def _workspace_root() -> Path:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(os.getcwd()))
    except NotDvcRepoError:
        raise CxrpruneError("not inside a DVC workspace (no .dvc folder here or above)") from None


def run(params: Params, ray: str | None = None, targets: list[str] | None = None, max_parallel: int | None = None,
        cpus: int | None = None, task_cpus: int | None = None, task_gpus: int | None = None,
        resources: str | None = None, remote: str | None = None, retries: int = 3,
        log_dir: str = str(common.LOG_DIR), progress: str = "auto") -> None:
    root = _workspace_root()
    if ray is None:
        session.run_dvc(["repro", *(targets or [])], root)
        return
    if max_parallel is not None and max_parallel < 1:
        raise CxrpruneError(f"--max-parallel must be >= 1, got {max_parallel}")
    opts = session.Options(address=ray, targets=list(targets or []), max_parallel=max_parallel,
                            local_cpus=cpus, task_cpus=task_cpus, task_gpus=task_gpus,
                            resources=parse_resources(resources), remote=remote, retries=retries,
                            log_dir=Path(log_dir), progress=progress, tracking=params.mlflow)
    report = session.reproduce(root, opts)
    done = sum(s.state == "done" for s in report.states.values())
    print(f"cxrprune repro: {done} per-seed stage(s) run on Ray and committed; "
          f"dvc.lock is up to date (summary: {os.path.relpath(report.summary_path, root)})")
