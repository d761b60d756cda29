"""``cxrprune repro [--ray [ADDRESS]]``: the whole pipeline, per-seed stages in parallel on Ray.

A thin entry point over :mod:`cxrprune.scaleout`. Without ``--ray`` it is ``dvc repro``.
``--ray`` alone starts a local Ray runtime on this machine's cores; ``--ray HOST:PORT`` (or
``--ray auto``) joins a running cluster. Either way ``dvc.lock`` ends up as if ``dvc repro``
had run everything.
"""

from __future__ import annotations

import os
from pathlib import Path

from cxrprune.core.config import Params
from cxrprune.core.errors import CxrpruneError
from cxrprune.scaleout import common, session
from cxrprune.scaleout.resources import parse_resources


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
