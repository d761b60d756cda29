"""Run the per-seed DVC stages as Ray tasks in parallel; DVC keeps the record.

``cxrprune repro --ray [ADDRESS]`` (see :func:`reproduce`) does what ``dvc repro`` does,
with the per-seed work spread over a Ray cluster:

1. **upstream**: the non-seed stages that the per-seed stages depend on (generate,
   prepare) run first with ``dvc repro <stage>``, so every input exists;
2. **seeds**: DVC's own status says which per-seed stages (matrix members, ``name@item``)
   are out of date. Each seed's chain (``train@s`` then ``prune@s``) runs as dependent Ray
   tasks, each asking for one GPU where the cluster has GPUs, else an equal share of the
   CPUs (``OMP_NUM_THREADS`` set to match). A task runs the stage's exact command from
   ``dvc.yaml`` in the workspace with ``DVC_ROOT``, ``DVC_STAGE`` and
   ``MLFLOW_TRACKING_URI`` set, its output in ``.dvc/tmp/ray-logs/<stage>.log``. Each stage
   that succeeds is recorded at once with ``dvc commit -f <stage>`` (DVC's API); a later
   stage of the chain runs only if DVC then still finds it out of date, as in ``dvc repro``;
3. **rest**: when every seed succeeded, ``dvc repro`` runs what is left (evaluate,
   analyze, ...). Afterwards ``dvc status`` is clean and ``dvc repro`` reruns nothing.

Failures: a failing stage (non-zero exit, a task error, a worker killed after Ray's
retries) does not stop the other seeds; its partial outputs are removed, its chain stops,
the end report names it with its log, and a rerun does only what is left. Tasks lost with
their node are retried by Ray (``max_retries``); real failures are not
(``retry_exceptions=False``). Ctrl-C force-cancels the tasks (a stage process dies with
its Ray worker), records what had finished and removes the outputs of stages cut short.

Multi-machine: with a shared filesystem (the same workspace path on every node) tasks run
in place. With ``remote=NAME`` (a DVC remote every node can reach) each task runs in a
private copy of the workspace's git-visible files on its node: it ``dvc pull``s the
outputs its stage depends on, runs the stage, ``dvc commit``s and ``dvc push``es its
outputs there, and the driver fills the stage's ``dvc.lock`` entry from the task, ``dvc
pull``s the outputs and ``dvc commit``s them in the workspace.
"""

from __future__ import annotations

import contextlib
import io
import json
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
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

from .atomic import remove_path
from .errors import CxrpruneError

LOG_DIR = Path(".dvc/tmp/ray-logs")  # inside DVC's own git-ignored tmp folder
SUMMARY = "summary.json"
FINAL = ("done", "failed", "blocked", "up to date", "cancelled")
LOCAL_UI = "http://127.0.0.1:5000"  # where `make ui` serves a local sqlite store


class ScaleoutError(CxrpruneError):
    """Some per-seed stages failed or the run could not be planned."""


# --------------------------------------------------------------------------- planning


@dataclass
class OutSpec:
    path: str  # relative to the workspace root
    persist: bool = False


@dataclass
class StageSpec:
    addr: str
    cmds: list[str]
    wdir: str  # relative to the workspace root
    outs: list[OutSpec]
    group_deps: list[str]  # in-group stages this one depends on
    producers: list[str]  # every stage whose outputs it depends on (pulled in remote mode)


@dataclass
class Group:
    label: str  # the matrix item (the seed) when its stages share one
    stages: list[str]  # dependencies first


@dataclass
class Plan:
    root: Path
    targets: list[str]
    upstream: list[str]  # non-seed stages the seed stages depend on
    stages: dict[str, StageSpec]
    groups: list[Group]
    frozen: set[str] = field(default_factory=set)


def is_seed_stage(stage: Any) -> bool:
    """A matrix (or foreach) member: ``train@3``, ``prune@a-0``."""
    return "@" in (getattr(stage, "name", None) or "")


def make_plan(root: str | os.PathLike, targets: Iterable[str] = ()) -> Plan:
    """The stages in scope (``targets`` and their upstream, or the whole pipeline) split into
    the non-seed stages before the seed stages, and the seed stages grouped by seed."""
    import networkx as nx
    from dvc.repo import Repo

    root = Path(root).resolve()
    targets = list(targets or [])
    with contextlib.chdir(root), Repo(str(root)) as repo:  # stage addresses are relative to the cwd
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        if targets:
            scope: set = set()
            for target in targets:
                try:
                    scope.update(repo.stage.collect(target, with_deps=True))
                except Exception as exc:  # dvc's StageNotFound and friends
                    raise ScaleoutError(f"--targets {target}: {exc}") from None
        else:
            scope = set(repo.index.stages)
        seeds = {s for s in scope if is_seed_stage(s)}
        upstream = {d for s in seeds for d in nx.descendants(graph, s) if d not in seeds and d in scope}
        sandwiched = sorted(u.addressing for u in upstream if any(d in seeds for d in nx.descendants(graph, u)))
        if sandwiched:
            raise ScaleoutError(f"stage(s) {', '.join(sandwiched)} sit between per-seed stages; "
                                f"run them with plain `dvc repro`")
        specs: dict[str, StageSpec] = {}
        groups: list[Group] = []
        sub = graph.subgraph(seeds)
        for component in nx.weakly_connected_components(sub):
            order = list(nx.lexicographical_topological_sort(sub.subgraph(component).reverse(copy=True),
                                                             key=lambda s: s.addressing))
            for s in order:
                specs[s.addressing] = _spec(s, root, graph, component)
            groups.append(Group(_group_label([s.addressing for s in order]), [s.addressing for s in order]))
        groups.sort(key=lambda g: _natural_key(g.label))
        specs = {a: specs[a] for g in groups for a in g.stages}
        frozen = {s.addressing for s in seeds if getattr(s, "frozen", False)}
        return Plan(root, targets, sorted(u.addressing for u in upstream), specs, groups, frozen)


def _spec(stage: Any, root: Path, graph: Any, component: set) -> StageSpec:
    cmd = stage.cmd
    cmds = [cmd] if isinstance(cmd, str) else list(cmd or [])
    outs = [OutSpec(os.path.relpath(o.fs_path, root), bool(o.persist)) for o in stage.outs]
    deps = sorted(graph.successors(stage), key=lambda s: s.addressing)
    return StageSpec(stage.addressing, cmds, os.path.relpath(stage.wdir, root), outs,
                     [d.addressing for d in deps if d in component], [d.addressing for d in deps])


def _group_label(addrs: list[str]) -> str:
    items = {a.split("@", 1)[1] for a in addrs}
    return items.pop() if len(items) == 1 else "+".join(addrs)


def _natural_key(label: str) -> tuple:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def dvc_status(repo: Any, addrs: Iterable[str]) -> set[str]:
    """The stages among ``addrs`` that DVC reports as changed."""
    addrs = list(addrs)
    if not addrs:
        return set()
    return set(repo.status(targets=addrs)) & set(addrs)


# ------------------------------------------------------------------- resources per task


@dataclass
class TaskResources:
    num_cpus: int
    num_gpus: int
    threads: int
    resources: dict[str, float]

    def describe(self) -> str:
        extra = "".join(f", {k}={v:g}" for k, v in self.resources.items())
        gpu = f"{self.num_gpus} GPU + " if self.num_gpus else ""
        return f"{gpu}{self.num_cpus} CPU ({self.threads} torch thread{'s' * (self.threads != 1)}){extra}"


def task_resources(nodes: list[dict[str, float]], n_parallel: int, num_cpus: int | None = None,
                   num_gpus: int | None = None, custom: dict[str, float] | None = None) -> TaskResources:
    """What each seed task asks Ray for, from the alive nodes' resources.

    GPUs in the cluster (on nodes holding the ``custom`` resources): one GPU per task and
    the CPUs that the scarcest GPU node has per GPU. No GPUs: an equal share of all CPUs
    among ``n_parallel`` tasks, at least 1 and at most what the largest node has.
    Torch threads follow the CPUs.
    """
    custom = dict(custom or {})
    eligible = [n for n in nodes if all(n.get(k, 0) >= v for k, v in custom.items())] or nodes
    gpu_nodes = [n for n in eligible if n.get("GPU", 0) >= 1]
    if num_gpus is None:
        num_gpus = 1 if gpu_nodes else 0
    if num_cpus is None:
        if num_gpus:
            per_gpu = [int(n.get("CPU", 0) // n["GPU"]) for n in gpu_nodes] or [1]
            num_cpus = max(1, min(per_gpu) * num_gpus)
        else:
            total = sum(n.get("CPU", 0) for n in eligible)
            largest = max((n.get("CPU", 0) for n in eligible), default=1)
            num_cpus = int(max(1, min(total // max(1, n_parallel), largest)))
    return TaskResources(int(num_cpus), int(num_gpus), max(1, int(num_cpus)), custom)


# ------------------------------------------------------------------------ MLflow links


def mlflow_link(run: dict[str, Any], ui: str = LOCAL_UI) -> str:
    """The MLflow UI address of a training run (``run.json``: run_id, experiment_id,
    tracking_uri). A local store has no server: the link is where ``make ui`` serves it."""
    uri = str(run.get("tracking_uri") or "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui
    return f"{base}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}"


def find_run_link(root: Path, spec: StageSpec) -> str | None:
    for out in spec.outs:
        path = root / out.path
        candidate = path / "run.json" if path.is_dir() else path
        if candidate.name == "run.json" and candidate.is_file():
            try:
                return mlflow_link(json.loads(candidate.read_text()))
            except (ValueError, KeyError, OSError):
                return None
    return None


# ---------------------------------------------------------------- outputs of a stage


def remove_outputs(root: Path, outs: Iterable[OutSpec]) -> None:
    """Delete a stage's outputs (not ``persist`` ones) and the temporary siblings an atomic
    write killed mid-way leaves (``.<name>.*``), as ``dvc repro`` does before a run."""
    for out in outs:
        if out.persist:
            continue
        path = root / out.path
        for p in [path, *path.parent.glob(f".{path.name}.*")] if path.parent.is_dir() else [path]:
            remove_path(p)


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


class ProgressBoard:
    """A tiny Ray actor: tasks report here when they start and where (``num_cpus=0``)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start(self, addr: str, info: dict[str, Any]) -> None:
        attempts = self.started.get(addr, {}).get("attempts", 0)
        self.started[addr] = {**info, "attempts": attempts + 1}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.started)


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


def _apply_remote_result(repo: Any, addr: str, entry: dict[str, Any], remote: str) -> None:
    """Fill the stage's lock entry with the hashes the task pushed, pull its outputs."""
    from dvc.stage.loader import StageLoader

    (stage,) = repo.stage.collect(addr)
    StageLoader.fill_from_lock(stage, entry)
    stage.dump(update_pipeline=False)
    repo._reset()
    repo.pull(targets=[addr], remote=remote, force=True)


# ------------------------------------------------------------------ the live view


@dataclass
class StageState:
    state: str = "waiting"  # waiting | queued | running | done | failed | blocked | up to date | cancelled
    node: str = ""
    node_id: str = ""
    start: float | None = None
    end: float | None = None
    log: str = ""
    link: str | None = None
    error: str = ""
    attempts: int = 0


class ProgressView:
    """Every seed on one line: each stage queued / running on <node> / done / failed, and
    the seed's MLflow run link. Redrawn in place on a terminal, one line per change
    otherwise."""

    def __init__(self, groups: list[Group], states: dict[str, StageState], stream: TextIO | None = None,
                 mode: str = "auto") -> None:
        self.groups, self.states = groups, states
        self.stream = stream or sys.stderr
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.mode = ("table" if tty else "lines") if mode == "auto" else mode
        self.t0 = time.time()
        self._drawn = 0
        self._last: dict[str, str] = {}
        self._last_draw = 0.0

    def cell(self, addr: str) -> str:
        st = self.states[addr]
        now = time.time()
        if st.state == "running":
            return f"running {now - (st.start or now):.0f}s on {st.node}"
        if st.state in ("done", "failed") and st.start and st.end:
            return f"{st.state} {st.end - st.start:.0f}s" + (f" on {st.node}" if st.node else "")
        return st.state

    def lines(self) -> list[str]:
        counts: dict[str, int] = {}
        for st in self.states.values():
            counts[st.state] = counts.get(st.state, 0) + 1
        head = (f"cxrprune repro --ray  {time.time() - self.t0:5.0f}s  "
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        width = shutil.get_terminal_size((160, 40)).columns
        rows = [head]
        for g in self.groups:
            cells = "  ".join(f"{a.split('@')[0]}: {self.cell(a):<30}" for a in g.stages)
            link = next((self.states[a].link for a in g.stages if self.states[a].link), None)
            rows.append(f"  seed {g.label:<6} {cells}" + (f"  {link}" if link else ""))
        limit = max(5, shutil.get_terminal_size((160, 40)).lines - 2)
        if len(rows) > limit:  # keep the active and failed seeds on screen
            keep = [r for r in rows[1:] if "running" in r or "failed" in r][: limit - 2]
            rows = [head, *keep, f"  ... {len(self.groups) - len(keep)} more seeds"]
        return [r[:width - 1] for r in rows]

    def refresh(self, force: bool = False) -> None:
        if self.mode == "none":
            return
        if self.mode == "lines":
            for g in self.groups:
                for a in g.stages:
                    text = self.states[a].state
                    if self._last.get(a) != text and text != "waiting":
                        self._last[a] = text
                        st = self.states[a]
                        where = f" on {st.node}" if st.node and text in ("running", "done", "failed") else ""
                        extra = f" ({st.error}; log {st.log})" if text == "failed" else ""
                        link = f"  {st.link}" if text == "done" and st.link else ""
                        self.stream.write(f"[{time.time() - self.t0:6.1f}s] {a}: {text}{where}{extra}{link}\n")
            self.stream.flush()
            return
        if not force and time.time() - self._last_draw < 0.5:
            return
        self._last_draw = time.time()
        out = self.lines()
        erase = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self.stream.write(erase + "\n".join(out) + "\n")
        self.stream.flush()
        self._drawn = len(out)

    def note(self, text: str) -> None:
        if self.mode == "table":
            self._drawn = 0  # keep the table above, start a fresh one below the note
        self.stream.write(text + "\n")
        self.stream.flush()


# ------------------------------------------------------------------ the driver


@dataclass
class Options:
    address: str = "local"  # "local" starts a runtime; else HOST:PORT or "auto" joins a cluster
    targets: list[str] = field(default_factory=list)
    max_parallel: int | None = None
    local_cpus: int | None = None  # CPUs of a local runtime (default: all cores)
    task_cpus: int | None = None
    task_gpus: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    remote: str | None = None
    retries: int = 3
    log_dir: Path = LOG_DIR
    progress: str = "auto"  # auto | table | lines | none
    tracking: Any = None  # a MlflowConfig: create the store before the tasks, pass its URI on


def run_dvc(args: list[str], root: Path, quiet: bool = False) -> None:
    """``dvc <args>`` in the workspace, output through to the terminal."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL if quiet else None)
    if proc.returncode != 0:
        raise ScaleoutError(f"dvc {' '.join(args)} failed (exit {proc.returncode})")


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare_tracking(cfg: Any, root: Path) -> str:
    """Create the MLflow store and experiment once, before concurrent writers (a new sqlite
    store breaks when several processes create it at once); returns the URI for the tasks."""
    import logging

    from . import tracking

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "Creating initial MLflow database tables"
    with _env(DVC_ROOT=str(root)):
        tracking.start(cfg)
        return tracking.tracking_uri(cfg)


@dataclass
class Report:
    states: dict[str, StageState]
    phases: dict[str, float]
    summary_path: Path


def reproduce(root: str | os.PathLike, opts: Options, stream: TextIO | None = None) -> Report:
    """The whole ``cxrprune repro --ray``; raises :class:`ScaleoutError` when a stage failed
    (after recording everything that succeeded) and ``KeyboardInterrupt`` on Ctrl-C (after
    cancelling and cleaning up)."""
    root = Path(root).resolve()
    with contextlib.chdir(root):  # DVC resolves stage addresses against the cwd
        return _reproduce(root, opts, stream or sys.stderr)


def _reproduce(root: Path, opts: Options, stream: TextIO) -> Report:
    phases: dict[str, float] = {}
    t = time.time()
    plan = make_plan(root, opts.targets)
    if not plan.groups:
        stream.write("cxrprune repro: no per-seed stages in scope; running dvc repro\n")
        run_dvc(["repro", *plan.targets], root)
        return Report({}, {"rest": time.time() - t}, root / opts.log_dir / SUMMARY)

    if plan.upstream:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            stale_up = dvc_status(repo, plan.upstream)
        if stale_up:
            stream.write(f"cxrprune repro: upstream stages first: dvc repro {' '.join(plan.upstream)}\n")
            stream.flush()
            run_dvc(["repro", *plan.upstream], root)
    phases["upstream"] = time.time() - t

    session = _Session(plan, opts, stream)
    try:
        session.run()
    finally:
        phases.update(session.phases)
        session.write_summary(phases)
    failed = [a for a, s in session.states.items() if s.state in ("failed", "cancelled")]
    blocked = [a for a, s in session.states.items() if s.state == "blocked"]
    if failed:
        lines = [f"  {a}: {session.states[a].error or session.states[a].state}; log {session.states[a].log}"
                 for a in failed]
        msg = (f"{len(failed)} stage(s) failed; what succeeded is recorded in dvc.lock, "
               f"{'blocked: ' + ', '.join(blocked) + '; ' if blocked else ''}"
               f"the remaining stages were not run. Fix and rerun to do only what is left:\n" + "\n".join(lines))
        stream.write(msg + "\n")
        raise ScaleoutError(f"{len(failed)} per-seed stage(s) failed: {', '.join(failed)} "
                            f"(logs in {opts.log_dir}; summary {session.summary_path})")
    t = time.time()
    stream.write(f"cxrprune repro: remaining stages: dvc repro {' '.join(plan.targets)}".rstrip() + "\n")
    stream.flush()
    run_dvc(["repro", *plan.targets], root)
    phases["rest"] = time.time() - t
    session.write_summary(phases)
    return Report(session.states, phases, session.summary_path)


class _Session:
    """Phase 2: the seed stages on Ray, with DVC's repository lock held throughout."""

    def __init__(self, plan: Plan, opts: Options, stream: TextIO) -> None:
        self.plan, self.opts, self.stream = plan, opts, stream
        self.root = plan.root
        self.states = {a: StageState() for a in plan.stages}
        self.group_of = {a: g for g in plan.groups for a in g.stages}
        self.refs: dict[Any, str] = {}
        self.active: set[str] = set()
        self.initial_stale: set[str] = set()
        self.phases: dict[str, float] = {}
        self.nodes: dict[str, Any] = {}
        self.resources: TaskResources | None = None
        self.summary_path = self.root / opts.log_dir / SUMMARY
        self.view = ProgressView(plan.groups, self.states, stream, opts.progress)
        self.repo: Any = None
        self.env: dict[str, str] = {}
        self.snapshot_ref: Any = None
        self.stopping = False

    # -- DVC, under its lock
    def _dvc(self, fn: Callable[[Any], Any]) -> Any:
        self.repo._reset()  # the index and lock data may have changed since the last call
        return fn(self.repo)

    def _commit(self, addr: str) -> None:
        self._dvc(lambda r: r.commit(addr, force=True))

    def run(self) -> None:
        from dvc.repo import Repo, lock_repo

        import logging

        dvc_logger = logging.getLogger("dvc")
        level = dvc_logger.level
        dvc_logger.setLevel(logging.WARNING)  # no "Updating lock file" lines through the live view
        self.repo = Repo(str(self.root))
        try:
            with lock_repo(self.repo):
                self._run_locked()
        finally:
            self.repo.close()
            dvc_logger.setLevel(level)

    def _run_locked(self) -> None:
        plan = self.plan
        seeds = [a for a in plan.stages if a not in plan.frozen]
        self.initial_stale = self._dvc(lambda r: dvc_status(r, seeds))
        todo = [g for g in plan.groups if any(a in self.initial_stale for a in g.stages)]
        for g in plan.groups:
            if g not in todo:
                for a in g.stages:
                    self.states[a].state = "up to date"
        if not todo:
            self.view.note("cxrprune repro: every per-seed stage is up to date")
            return
        t = time.time()
        tracking_uri = prepare_tracking(self.opts.tracking, self.root) if self.opts.tracking is not None else None
        ray = self._init_ray()
        self.phases["ray_init"] = time.time() - t
        try:
            self._schedule(ray, todo, tracking_uri)
        finally:
            if self.opts.address == "local":
                ray.shutdown()
            else:
                with contextlib.suppress(Exception):
                    ray.shutdown()  # disconnects this driver; the cluster keeps running

    def _init_ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ScaleoutError("--ray needs Ray: pip install 'ray>=2.9'") from None
        kw: dict[str, Any] = dict(log_to_driver=False, logging_level="WARNING", include_dashboard=False)
        if self.opts.address == "local":
            ray.init(address="local", num_cpus=self.opts.local_cpus or os.cpu_count(), **kw)
        else:
            kw.pop("include_dashboard")
            try:
                ray.init(address=self.opts.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ScaleoutError(f"cannot join the Ray cluster at {self.opts.address} ({exc}); start it with "
                                    f"`ray start --head` (see README, 'Scale-out')") from None
        return ray

    def _schedule(self, ray: Any, todo: list[Group], tracking_uri: str | None) -> None:
        opts = self.opts
        alive = [n for n in ray.nodes() if n.get("Alive")]
        self.nodes = {n["NodeID"]: {"ip": n.get("NodeManagerAddress"), "resources": n.get("Resources", {})}
                      for n in alive}
        n_parallel = min(len(todo), opts.max_parallel or len(todo))
        self.resources = res = task_resources([n.get("Resources", {}) for n in alive], n_parallel,
                                              opts.task_cpus, opts.task_gpus, opts.resources)
        need = {"CPU": res.num_cpus, "GPU": res.num_gpus, **res.resources}
        if not any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items() if v) for n in alive):
            raise ScaleoutError(f"no node of the Ray cluster can run a seed task needing {res.describe()}; "
                                f"adjust --task-cpus, --task-gpus or --resources")
        mode = f"DVC remote {opts.remote!r}" if opts.remote else "shared workspace"
        self.view.note(f"cxrprune repro: {len(todo)} seed(s) on {len(alive)} Ray node(s) "
                       f"({ray.cluster_resources().get('CPU', 0):g} CPU, {ray.cluster_resources().get('GPU', 0):g} GPU); "
                       f"each task: {res.describe()}; {mode}; logs in {opts.log_dir}/")
        if opts.remote and tracking_uri and not tracking_uri.startswith(("http://", "https://")) and len(alive) > 1:
            self.view.note(f"warning: tasks on other machines cannot write to {tracking_uri}; "
                           f"run an `mlflow server` and export MLFLOW_TRACKING_URI (README, 'Scale-out')")
        self.env = {"OMP_NUM_THREADS": str(res.threads), "MKL_NUM_THREADS": str(res.threads),
                    "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
        if tracking_uri:
            self.env["MLFLOW_TRACKING_URI"] = tracking_uri
        if opts.remote:
            self._push_inputs(todo)
            self.snapshot_ref = ray.put(make_snapshot(self.root))
        self.board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        self.task = ray.remote(execute_stage)
        self.task_options = dict(num_cpus=res.num_cpus, num_gpus=res.num_gpus, resources=res.resources or None,
                                 max_retries=opts.retries, retry_exceptions=False)
        t = time.time()
        pending = deque(todo)
        try:
            while pending or self.refs:
                while pending and len(self.active) < (opts.max_parallel or len(todo)):
                    g = pending.popleft()
                    self.active.add(g.label)
                    self._advance(g)
                if not self.refs:
                    continue
                ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=0.5)
                if ready:
                    ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
                self._poll_board(ray)
                for ref in ready:
                    self._finish(ray, ref)
                self.view.refresh()
        except KeyboardInterrupt:
            self._interrupt(ray)
            raise
        finally:
            self.phases["seeds"] = time.time() - t
            self.view.refresh(force=True)

    def _push_inputs(self, todo: list[Group]) -> None:
        """Remote mode: the outputs the tasks will pull (upstream, clean in-group stages)."""
        clean = [a for g in todo for a in g.stages if a not in self.initial_stale]
        targets = [*self.plan.upstream, *clean]
        if targets:
            self.view.note(f"cxrprune repro: dvc push -r {self.opts.remote} {' '.join(targets)}")
            try:
                self._dvc(lambda r: r.push(targets=targets, remote=self.opts.remote))
            except Exception as exc:
                raise ScaleoutError(f"dvc push -r {self.opts.remote} failed ({exc})") from None

    def _advance(self, g: Group) -> None:
        for addr in g.stages:
            st = self.states[addr]
            if st.state != "waiting":
                continue
            ups = [self.states[u].state for u in self.plan.stages[addr].group_deps]
            if any(s in ("failed", "blocked", "cancelled") for s in ups):
                st.state = "blocked"
                continue
            if any(s not in FINAL for s in ups):
                continue  # its inputs are still being made
            if any(s == "done" for s in ups):  # an input was remade: ask DVC again, as dvc repro does
                stale = bool(self._dvc(lambda r: dvc_status(r, [addr])))
            else:
                stale = addr in self.initial_stale
            if stale and self.stopping:
                st.state, st.error = "cancelled", "cancelled (Ctrl-C) before it started"
            elif stale and addr not in self.plan.frozen:
                self._submit(addr)
            else:
                st.state = "up to date"
        if all(self.states[a].state in FINAL for a in g.stages):
            self.active.discard(g.label)

    def _submit(self, addr: str) -> None:
        spec = self.plan.stages[addr]
        log = (self.opts.log_dir / f"{addr}.log").as_posix()
        payload = {"addr": addr, "cmds": spec.cmds, "wdir": spec.wdir, "outs": [asdict(o) for o in spec.outs],
                   "root": str(self.root), "log": log, "env": self.env, "remote": self.opts.remote,
                   "producers": spec.producers, "path_prefix": str(Path(sys.executable).parent)}
        if self.opts.remote:
            payload["lock_text"] = (self.root / "dvc.lock").read_text(encoding="utf-8") \
                if (self.root / "dvc.lock").is_file() else "schema: '2.0'\nstages: {}\n"
        ref = self.task.options(name=addr, **self.task_options).remote(payload, self.board, self.snapshot_ref)
        self.refs[ref] = addr
        st = self.states[addr]
        st.state, st.log = "queued", log

    def _poll_board(self, ray: Any) -> None:
        try:
            started = ray.get(self.board.snapshot.remote(), timeout=10)
        except Exception:  # the view is best effort
            return
        for addr, info in started.items():
            st = self.states[addr]
            st.attempts = info.get("attempts", 1)
            st.node_id = info["node_id"]
            st.node = f"{info['host']}/{info['node_id'][:6]}"
            if st.state == "queued":
                st.state, st.start = "running", info["start"]

    def _finish(self, ray: Any, ref: Any) -> None:
        from ray.exceptions import RayError, TaskCancelledError

        addr = self.refs.pop(ref)
        st, spec = self.states[addr], self.plan.stages[addr]
        try:
            res = ray.get(ref)
        except TaskCancelledError:
            st.state, st.end = "cancelled", time.time()
            res = None
        except RayError as exc:
            st.state, st.end = "failed", time.time()
            st.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
            res = None
        if res is not None:
            st.start, st.end = res["start"], res["end"]
            st.node_id, st.node = res["node_id"], f"{res['host']}/{res['node_id'][:6]}"
            if res.get("log_text") is not None:  # remote mode: the log came back with the result
                path = self.root / st.log
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(res["log_text"], encoding="utf-8")
            if res["rc"] == 0:
                try:
                    if self.opts.remote:
                        self._dvc(lambda r: _apply_remote_result(r, addr, res["lock"], self.opts.remote))
                    self._commit(addr)
                    st.state = "done"
                    st.link = find_run_link(self.root, spec)
                except Exception as exc:  # dvc: an output missing, a failed pull
                    st.state, st.error = "failed", f"dvc commit failed: {exc}"
            else:
                st.state = "failed"
                st.error = res.get("error") or f"exit status {res['rc']}"
        if st.state != "done" and not self.opts.remote:
            remove_outputs(self.root, spec.outs)
        self._advance(self.group_of[addr])

    def _interrupt(self, ray: Any) -> None:
        """Ctrl-C: force-cancel every task, keep what finished, remove what was cut short."""
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        self.stopping = True
        try:
            self.view.note("\ncxrprune repro: interrupted; cancelling tasks and removing partial outputs ...")
            for ref in list(self.refs):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            deadline = time.time() + 30
            for ref in list(self.refs):
                with contextlib.suppress(Exception):
                    ray.wait([ref], timeout=max(0.1, deadline - time.time()))
            self._poll_board(ray)
            for ref in list(self.refs):
                try:
                    res = ray.get(ref, timeout=0.1)
                except Exception:
                    res = None
                if res is not None and res.get("rc") == 0:
                    self._finish(ray, ref)  # finished before the cancel reached it: record it
                    continue
                addr = self.refs.pop(ref)
                st = self.states[addr]
                was_started = st.state == "running"
                st.state, st.end = "cancelled", time.time()
                st.error = "cancelled (Ctrl-C)"
                if was_started and not self.opts.remote:
                    remove_outputs(self.root, self.plan.stages[addr].outs)
            for st in self.states.values():
                if st.state in ("waiting", "queued"):
                    st.state = "cancelled"
        finally:
            signal.signal(signal.SIGINT, old)

    def write_summary(self, phases: dict[str, float]) -> None:
        data = {"address": self.opts.address, "mode": "remote" if self.opts.remote else "shared",
                "remote": self.opts.remote, "task_resources": asdict(self.resources) if self.resources else None,
                "nodes": self.nodes, "phases": phases,
                "groups": {g.label: g.stages for g in self.plan.groups},
                "stages": {a: asdict(s) for a, s in self.states.items()},
                "failed": [a for a, s in self.states.items() if s.state in ("failed", "cancelled")]}
        self.summary_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.summary_path)


def parse_resources(text: str | None) -> dict[str, float]:
    """``--resources '{"worker_node": 0.5}'`` -> a dict of Ray custom resources."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ScaleoutError(f"--resources must be a JSON object like '{{\"gpu_box\": 1}}', got {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                              for v in value.values()):
        raise ScaleoutError(f"--resources must map names to positive numbers, got {text!r}")
    return {str(k): float(v) for k, v in value.items()}


__all__ = ["Options", "Plan", "Report", "ScaleoutError", "make_plan", "mlflow_link", "parse_resources",
           "remove_outputs", "reproduce", "task_resources"]
