"""Workspaces for the end-to-end tests: real clones of this repository with the tiny params.

Every end-to-end test works where a user works: in a ``git clone`` of the repository (its
Makefile, ``dvc.yaml``, ``studies/``, committed outputs and all), with the tiny params of
:data:`TINY` on top and committed. A developer's uncommitted changes are laid over the clone,
so a test run checks the working tree, not only the last commit.

One reproduced tiny study (``make repro`` in such a clone) is shared by every test that only
reads it: the session fixture ``tiny_study`` in ``conftest.py`` builds it once per test run,
whichever pytest-xdist worker asks first, under a file lock; a test that changes anything
(or runs a DVC command, which takes DVC's repository lock) works on a :func:`copy_workspace`.

Subprocess timeouts here are hang detectors, not budgets: :data:`HANG_S` is many times the
slowest command's time on the slowest machine kind, and the failure says which command hung
and for how long.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEEDS = [0, 1]
LEVELS = [0.0, 0.5, 0.9]
METHODS = ["l1", "random", "channel", "int8"]  # the default's and channel (out of the default for time): int8 has one level, 0.0
N_BLOCKS = 3 * len(LEVELS) + 1  # (method, level) blocks per seed
# The tiny study's `dvc repro` takes about 2.5 min on the AVX2 kind with the other core busy;
# 20 min means a hang, not a slow machine.
HANG_S = 1200.0
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]

TINY = {
    "seeds": SEEDS,
    "data": {"image_size": 32, "workers": 1},
    "synthetic": {"n_patients": 100, "images_per_patient": 2.0, "image_size": 48, "min_positives": 2,
                  "val_fraction": 0.25, "test_fraction": 0.3},
    # checkpoint_every_s 0: a resume state after every epoch (the kill-and-resume tests need one)
    "train": {"arch": "resnet10", "epochs": 2, "patience": 1, "batch_size": 64, "threads": 1, "checkpoint_every_s": 0},
    "prune": {"methods": METHODS, "levels": LEVELS, "batch_size": 256, "calibration_images": 16,
              "efficiency_repeats": 1},
    "evaluate": {"test": "ttest"},
    "reader": {"per_group": 2, "forms": 2, "simulated_readers": 2, "image_size": 64},
}


def tiny_params() -> dict:
    """The repository's params.yaml with the tiny values on top (keys must stay valid)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        if section not in params:
            continue
        if isinstance(values, dict):
            params[section].update({k: v for k, v in values.items()})
        else:
            params[section] = values
    return params


def env() -> dict:
    """The test environment: this venv first on PATH, no DVC_/MLFLOW_ settings of the caller."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["DVC_NO_ANALYTICS"] = "1"
    e["OMP_NUM_THREADS"] = "1"
    return e


class Hung(AssertionError):
    """A command ran past the hang detector."""


def run(cmd: list[str], cwd: Path, timeout: float = HANG_S, extra_env: dict | None = None,
        drop_env: tuple[str, ...] = ()) -> str:
    """Run ``cmd``; its stdout + stderr, or an AssertionError with the tail of both."""
    e = {k: v for k, v in {**env(), **(extra_env or {})}.items() if k not in drop_env}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise Hung(f"`{' '.join(cmd)}` in {cwd} still running after {time.monotonic() - t0:.0f} s (hang "
                   f"detector {timeout:.0f} s); output so far:\n{_text(exc.stdout)[-3000:]}\n"
                   f"{_text(exc.stderr)[-3000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) after {time.monotonic() - t0:.0f} s:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def commit_all(ws: Path, message: str) -> None:
    run([*GIT, "add", "-A"], ws)
    run([*GIT, "commit", "-qm", message, "--allow-empty"], ws)


def _overlay_working_tree(dest: Path) -> None:
    """Lay the repository's uncommitted changes (modified, deleted and untracked files that git
    does not ignore) over a fresh clone of it."""
    def files(*args: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO, capture_output=True, check=True).stdout
        return [f for f in out.decode().split("\0") if f]

    deleted = set(files("--deleted"))
    for rel in files("--modified", "--others", "--exclude-standard"):
        if rel in deleted:
            continue
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    for rel in deleted:
        (dest / rel).unlink(missing_ok=True)


def clone_repo(dest: Path, params: dict | None = None, message: str = "tiny study") -> Path:
    """``git clone`` of this repository (with the working tree's changes) at ``dest``, the tiny
    params (or ``params``) written and committed. ``.venv`` links to the venv running the
    tests, so the Makefile's targets use it (see :func:`make`)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "-q", str(REPO), str(dest)], dest.parent)
    _overlay_working_tree(dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    (dest / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    with open(dest / ".git" / "info" / "exclude", "a") as f:  # .gitignore's /.venv/ matches folders, not links
        f.write("/.venv\n")
    commit_all(dest, message)
    return dest


# `make` thinks .venv is installed when its stamp is newer than pyproject.toml and the lock: the
# clone's checkout made those files new, so the stamp is a file of the test's own, and the two
# files are dated back. The Makefile's own install recipe then does not run (it would install
# the clone into the venv running the tests).
_STAMP_TIME = 946684800  # 2000-01-01


def make(target: str, ws: Path, *args: str, timeout: float = HANG_S, **kw) -> str:
    """``make TARGET`` in a clone, with the venv running the tests as its installed ``.venv``."""
    stamp = ws / ".dvc" / "tmp" / "test-venv-installed"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    for name in ("pyproject.toml", "requirements.lock"):
        os.utime(ws / name, (_STAMP_TIME, _STAMP_TIME))
    return run(["make", "--no-print-directory", target, f"STAMP={stamp}", *args], ws, timeout=timeout, **kw)


def make_workspace(dest: Path) -> Path:
    """A clone with the tiny params (nothing reproduced yet)."""
    return clone_repo(dest)


def copy_workspace(src: Path, dest: Path) -> Path:
    """A private copy of a reproduced workspace (git, DVC cache, outputs, MLflow store)."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("lock", "rwlock", "ray-logs", "updater*"))
    return dest
