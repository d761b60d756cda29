"""Atomic file output: write to a temporary file beside the target, then rename.

A stage killed at any moment leaves either the previous complete file or none, never a
truncated one, because ``os.replace`` is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # annotations only: scaleout imports this module and needs no pandas
    import pandas as pd


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; an output gets the mode a plain
# open() would give it, so collaborators and workers on a shared file system can read it.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def _temp_prefix(target: Path) -> str:
    """``.<name>.<host>-<pid>.``: whose temporary it is, so a later writer can tell a dead
    writer's leftover from a live one's work in progress."""
    return f".{target.name}.{_HOST}-{os.getpid()}."


def _sweep_dead_temps(target: Path) -> None:
    """Remove temporaries of ``target`` left by writers on this host that no longer run (a
    SIGKILL mid-write): they would otherwise change the hash of a folder DVC tracks."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{re.escape(_HOST)}-(\d+)\.")
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.{_HOST}-*"):
        match = pattern.match(leftover.name)
        if match and not _alive(int(match.group(1))):  # our own pid is alive: never ours
            remove_path(leftover)


def remove_path(path: Path) -> None:
    """Delete a file, link or folder if it is there (a folder link is unlinked, not followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched; what a
    killed writer of the same target left behind is removed on success.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=suffix or ".tmp", dir=target.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _sweep_dead_temps(target)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sweep_dead_temps(target)


def replace_dir(src: Path, target: Path) -> None:
    """Put folder ``src`` in place of ``target`` (two renames; the old copy is removed after)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(json_clean(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def json_clean(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python numbers, so the JSON is strict (the one
    cleaning every JSON output goes through: :func:`write_json` applies it). Duck-typed on
    ``.item()`` so this module needs no numpy (the scale-out driver imports it)."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # numpy scalar or 0-d array
        return json_clean(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj
