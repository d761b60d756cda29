"""Atomic outputs: a killed writer leaves the previous file, and its leftovers are swept."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxrprune.core import atomic


def test_atomic_writes_remove_only_dead_writers_leftovers(tmp_path):
    """A writer killed mid-write leaves ``.<name>.<host>-<pid>.*``; the next successful write of
    the same target removes it, but never a live writer's temporary or another target's."""
    target = tmp_path / "t.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".t.json.{atomic._HOST}-{dead_pid}.abc123.tmp"
    stale_dir = tmp_path / f".t.json.{atomic._HOST}-{dead_pid}.xyz"
    live = tmp_path / f".t.json.{atomic._HOST}-1.def456.tmp"  # pid 1 is always running
    other = tmp_path / f".u.json.{atomic._HOST}-{dead_pid}.abc123.tmp"
    stale.write_text("half")
    stale_dir.mkdir()
    for p in (live, other):
        p.write_text("x")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("never")
            raise RuntimeError
    assert stale.exists() and not target.exists()  # a failed write sweeps nothing
    atomic.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    """Not the private 0600/0700 of mkstemp/mkdtemp: others on a shared file system read them."""
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    atomic.write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    with atomic.atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("y")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask
