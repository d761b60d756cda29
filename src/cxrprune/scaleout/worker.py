"""What runs inside a Ray task: one stage's exact ``dvc.yaml`` command, logged, dying with
its worker; in DVC-remote mode, in a private copy of the workspace unpacked from a snapshot."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from cxrprune.scaleout.common import ScaleoutError
from cxrprune.scaleout.plan import OutSpec, remove_outputs

# --------------------------------------------------------------------- the Ray side


_PRCTL: Any = None


def _load_prctl() -> Any:
    """libc's prctl, loaded in the worker before any fork: the child must not dlopen."""
    global _PRCTL
    if _PRCTL is None:
        try:
            import ctypes

            _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # not Linux
            _PRCTL = False
    return _PRCTL


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the stage process gets SIGKILL when its Ray worker dies (force-cancel, node
    loss, OOM kill), so no orphan keeps writing outputs. Only a foreign call between fork
    and exec: nothing that could wait on a lock another thread of the worker held."""
    if _PRCTL:
        _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


# shell words that cannot follow ``exec``: keywords and builtins with no program of that name
_SHELL_WORDS = frozenset("""! { [[ if for while until case select function time . : alias cd command declare
eval exec exit export local read readonly return set shift source trap typeset ulimit umask unset wait""".split())


def _exec_form(cmd: str) -> str:
    """A simple command becomes ``exec cmd``, so the shell is replaced by the stage process.
    bash does this by itself, dash (/bin/sh on Debian, the default where $SHELL is unset) does
    not: the stage would run as the shell's child, and the death signal the shell gets from its
    Ray worker would leave that child training on. Lists, pipes, redirections, assignments
    and builtins stay as written."""
    if "\n" in cmd:
        return cmd
    try:
        lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words = list(lex)
    except ValueError:  # unbalanced quotes: leave it to the shell to report
        return cmd
    if not words or "=" in words[0] or words[0] in _SHELL_WORDS or any(set(w) <= set("();<>|&") for w in words):
        return cmd
    return f"exec {cmd.strip()}"


def _shell_cmd(cmd: str) -> list[str]:
    """The stage command as DVC runs it: in $SHELL without rc files."""
    cmd = _exec_form(cmd)
    try:
        from dvc.stage.run import _make_cmd, get_executable

        made = _make_cmd(get_executable(), cmd)
        return made if isinstance(made, list) else ["/bin/sh", "-c", cmd]
    except ImportError:  # pragma: no cover
        return ["/bin/sh", "-c", cmd]


def _run_logged(argv: list[str], cwd: Path, env: dict[str, str], log: TextIO) -> int:
    log.write(f"$ {' '.join(argv[-1:]) if argv[-2:-1] == ['-c'] else ' '.join(argv)}\n")
    log.flush()
    _load_prctl()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    except BaseException:  # a soft cancel (KeyboardInterrupt in the worker): take the stage down too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def execute_stage(spec: dict[str, Any], board: Any = None, snapshot: bytes | None = None) -> dict[str, Any]:
    """Body of one Ray task: run one stage's command(s) on this node; never raises for a
    failing stage (its exit status is in the result)."""
    import ray

    info = {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}
    if board is not None:  # before any output is touched, so the driver knows what to clean up
        ray.get(board.start.remote(spec["addr"], info))
    remote = spec.get("remote")
    work = Path(tempfile.mkdtemp(prefix="cxrprune-task-")) if remote else Path(spec["root"])
    log_path = work / spec["log"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {**info, "addr": spec["addr"], "rc": None, "lock": None}
    env = {**os.environ, **spec["env"], "DVC_ROOT": str(work), "DVC_STAGE": spec["addr"]}
    env["PATH"] = os.pathsep.join(p for p in (spec.get("path_prefix"), os.environ.get("PATH")) if p)
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"# {spec['addr']} on {info['host']} ({info['ip']}, node {info['node_id'][:12]}), "
                      f"pid {info['pid']}, {time.strftime('%Y-%m-%d %H:%M:%S')}, in {work}\n")
            log.flush()
            dvc = [sys.executable, "-m", "dvc"]
            if remote:
                _unpack_snapshot(snapshot, work, spec)
                if (work / "src").is_dir():  # run the snapshot's code, the code DVC records
                    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(work / "src"), env.get("PYTHONPATH")) if p)
                if spec["producers"]:
                    rc = _run_logged([*dvc, "pull", "-r", remote, *spec["producers"]], work, env, log)
                    if rc != 0:
                        result["rc"], result["error"] = rc, "dvc pull of its inputs failed"
                        return result
            remove_outputs(work, [OutSpec(**o) for o in spec["outs"]])
            rc = 0
            for cmd in spec["cmds"]:
                rc = _run_logged(_shell_cmd(cmd), work / spec["wdir"], env, log)
                if rc != 0:
                    break
            result["rc"] = rc
            if rc == 0 and remote:
                for args in (["commit", "-f", spec["addr"]], ["push", "-r", remote, spec["addr"]]):
                    rc = _run_logged([*dvc, *args], work, env, log)
                    if rc != 0:
                        result["rc"], result["error"] = rc, f"dvc {args[0]} in the task's copy failed"
                        return result
                import yaml

                lock = yaml.safe_load((work / "dvc.lock").read_text())
                result["lock"] = lock["stages"][spec["addr"]]
    finally:
        result["end"] = time.time()
        if remote:
            with contextlib.suppress(OSError):
                result["log_text"] = log_path.read_text(encoding="utf-8", errors="replace")[-500_000:]
            shutil.rmtree(work, ignore_errors=True)
    return result


# ------------------------------------------------------------- remote (DVC remote) mode


def make_snapshot(root: Path) -> bytes:
    """The workspace's git-visible files (tracked or untracked, not ignored) as a tar.gz,
    plus ``.dvc/config.local`` (remote credentials); no data, no cache."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ScaleoutError(f"--remote needs a git workspace ({exc})") from None
    names = [n for n in listed if n and (root / n).is_file()]
    if (root / ".dvc/config.local").is_file():
        names.append(".dvc/config.local")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(set(names)):
            tar.add(root / name, arcname=name, recursive=False)
    return buf.getvalue()


def _unpack_snapshot(snapshot: bytes | None, work: Path, spec: dict[str, Any]) -> None:
    if snapshot is None:
        raise RuntimeError("remote mode without a workspace snapshot")
    with tarfile.open(fileobj=io.BytesIO(snapshot), mode="r:gz") as tar:
        tar.extractall(work, filter="data")
    (work / "dvc.lock").write_text(spec["lock_text"], encoding="utf-8")  # the lock as of now
    cache = Path(os.environ.get("CXRPRUNE_NODE_CACHE") or Path(tempfile.gettempdir()) / "cxrprune-dvc-cache")
    cache.mkdir(parents=True, exist_ok=True)
    with open(work / ".dvc" / "config.local", "a", encoding="utf-8") as f:
        # no git in the copy; one cache per node, shared by its tasks, so inputs are pulled once
        f.write(f"\n[core]\n    no_scm = true\n[cache]\n    dir = {cache}\n    type = \"reflink,hardlink,copy\"\n")
