"""Run the per-seed DVC stages as Ray tasks in parallel; DVC keeps the record.

``cxrprune repro --ray [ADDRESS]`` (see :func:`reproduce`) does what ``dvc repro`` does,
with the per-seed work spread over a Ray cluster:

1. **upstream**: the non-seed stages that the per-seed stages depend on (generate,
   prepare) run first with ``dvc repro <stage>``, so every input exists. A pipeline with
   plain stages between its per-item stages (a study's ``dvc.yaml``) runs in waves: steps 1
   and 2 once per wave (:mod:`cxrprune.scaleout.plan`), on one Ray runtime;
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
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from cxrprune.scaleout.common import FINAL, LOG_DIR, SUMMARY, ScaleoutError
from cxrprune.scaleout.plan import Group, Plan, Wave, dvc_status, make_plan, remove_outputs
from cxrprune.scaleout.progress import (
    ProgressBoard,
    ProgressView,
    StageState,
    find_run_link,
)
from cxrprune.scaleout.resources import TaskResources, task_resources
from cxrprune.scaleout.worker import execute_stage, make_snapshot


def _apply_remote_result(repo: Any, addr: str, entry: dict[str, Any], remote: str) -> None:
    """Fill the stage's lock entry with the hashes the task pushed, pull its outputs."""
    from dvc.stage.loader import StageLoader

    (stage,) = repo.stage.collect(addr)
    StageLoader.fill_from_lock(stage, entry)
    stage.dump(update_pipeline=False)
    repo._reset()
    repo.pull(targets=[addr], remote=remote, force=True)


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

    from cxrprune.tracking import store

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "Creating initial MLflow database tables"
    with _env(DVC_ROOT=str(root)):
        store.start(cfg)
        return store.tracking_uri(cfg)


@contextlib.contextmanager
def _ctrl_c_as_flag() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) sets a flag that the scheduling loop checks every half second, instead
    of raising KeyboardInterrupt wherever the main thread happens to be: inside Ray's and
    DVC's calls it could be swallowed (a Ctrl-C right after a task failed was lost, and the
    run went on for minutes). Outside the main thread (no signal handler possible) the flag
    never sets and KeyboardInterrupt behaves as usual."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


@dataclass
class ReproResult:
    """What one ``cxrprune repro --ray`` did: each stage's state, seconds per phase, its summary file."""

    states: dict[str, StageState]
    phases: dict[str, float]
    summary_path: Path


def reproduce(root: str | os.PathLike, opts: Options, stream: TextIO | None = None) -> ReproResult:
    """The whole ``cxrprune repro --ray``; raises :class:`ScaleoutError` when a stage failed
    (after recording everything that succeeded) and ``KeyboardInterrupt`` on Ctrl-C (after
    cancelling and cleaning up)."""
    root = Path(root).resolve()
    with contextlib.chdir(root):  # DVC resolves stage addresses against the cwd
        return _reproduce(root, opts, stream or sys.stderr)


def _reproduce(root: Path, opts: Options, stream: TextIO) -> ReproResult:
    phases: dict[str, float] = {}
    t = time.time()
    plan = make_plan(root, opts.targets)
    if not plan.waves:
        stream.write("cxrprune repro: no per-seed stages in scope; running dvc repro\n")
        run_dvc(["repro", *plan.targets], root)
        return ReproResult({}, {"rest": time.time() - t}, root / opts.log_dir / SUMMARY)
    phases["plan"] = time.time() - t

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
    return ReproResult(session.states, phases, session.summary_path)


class _Session:
    """The per-item stages on Ray, wave by wave: a wave's plain prerequisites with ``dvc
    repro`` first, then its chains in parallel with DVC's repository lock held. One Ray
    runtime serves every wave; a failure in one wave blocks the later ones."""

    def __init__(self, plan: Plan, opts: Options, stream: TextIO) -> None:
        self.plan, self.opts, self.stream = plan, opts, stream
        self.root = plan.root
        self.states = {a: StageState() for a in plan.stages}
        self.group_of = {a: g for g in plan.groups for a in g.stages}
        self.refs: dict[Any, str] = {}
        self.active: set[str] = set()
        self.initial_stale: set[str] = set()
        self.phases: dict[str, float] = {"upstream": 0.0, "seeds": 0.0}
        self.wave = plan.waves[0]
        self.ray: Any = None
        self.tracking_uri: str | None = None
        self.board: Any = None
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
        try:
            for k, wave in enumerate(self.plan.waves):
                self.wave = wave
                label = f"wave {k + 1}/{len(self.plan.waves)}: " if len(self.plan.waves) > 1 else ""
                self._run_before(wave)
                self._run_wave(wave, label)
                if any(self.states[a].state in ("failed", "cancelled") for g in wave.groups for a in g.stages):
                    for later in self.plan.waves[k + 1:]:
                        for g in later.groups:
                            for a in g.stages:
                                self.states[a].state = "blocked"
                    break
        finally:
            if self.ray is not None:
                if self.opts.address == "local":
                    self.ray.shutdown()
                else:
                    with contextlib.suppress(Exception):
                        self.ray.shutdown()  # disconnects this driver; the cluster keeps running

    def _run_before(self, wave: Wave) -> None:
        """The plain stages this wave reads, reproduced in order by ``dvc repro`` (outside
        the repository lock, which ``dvc repro`` takes itself)."""
        if not wave.before:
            return
        from dvc.repo import Repo

        t = time.time()
        with Repo(str(self.root)) as repo:
            stale = dvc_status(repo, wave.before)
        if stale:
            self.view.note(f"cxrprune repro: upstream stages first: dvc repro {' '.join(wave.before)}")
            run_dvc(["repro", *wave.before], self.root)
        self.phases["upstream"] += time.time() - t

    def _run_wave(self, wave: Wave, label: str) -> None:
        import logging

        from dvc.repo import Repo, lock_repo

        dvc_logger = logging.getLogger("dvc")
        level = dvc_logger.level
        dvc_logger.setLevel(logging.WARNING)  # no "Updating lock file" lines through the live view
        self.repo = Repo(str(self.root))
        try:
            with lock_repo(self.repo):
                self._run_locked(wave, label)
        finally:
            self.repo.close()
            dvc_logger.setLevel(level)

    def _run_locked(self, wave: Wave, label: str) -> None:
        plan = self.plan
        items = [a for g in wave.groups for a in g.stages if a not in plan.frozen]
        self.initial_stale = self._dvc(lambda r: dvc_status(r, items))
        todo = [g for g in wave.groups if any(a in self.initial_stale for a in g.stages)]
        for g in wave.groups:
            if g not in todo:
                for a in g.stages:
                    self.states[a].state = "up to date"
        if not todo:
            self.view.note(f"cxrprune repro: {label}every per-seed stage is up to date")
            return
        if self.ray is None:
            t = time.time()
            if self.opts.tracking is not None:
                self.tracking_uri = prepare_tracking(self.opts.tracking, self.root)
            self.ray = self._init_ray()
            self.phases["ray_init"] = time.time() - t
        self._schedule(self.ray, todo, self.tracking_uri, label)

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

    def _schedule(self, ray: Any, todo: list[Group], tracking_uri: str | None, label: str = "") -> None:
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
        self.view.note(f"cxrprune repro: {label}{len(todo)} seed(s) on {len(alive)} Ray node(s) "
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
            self.snapshot_ref = ray.put(make_snapshot(self.root))  # per wave: a study's plain stages moved on
        if self.board is None:
            self.board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        self.task = ray.remote(execute_stage)
        self.task_options = dict(num_cpus=res.num_cpus, num_gpus=res.num_gpus, resources=res.resources or None,
                                 max_retries=opts.retries, retry_exceptions=False)
        t = time.time()
        pending = deque(todo)
        try:
            with _ctrl_c_as_flag() as ctrl_c:
                self._loop(ray, pending, todo, ctrl_c)
        except KeyboardInterrupt:
            self._interrupt(ray)
            raise
        finally:
            self.phases["seeds"] += time.time() - t
            self.view.refresh(force=True)

    def _loop(self, ray: Any, pending: deque, todo: list[Group], ctrl_c: threading.Event) -> None:
        opts = self.opts
        while pending or self.refs:
            if ctrl_c.is_set():
                raise KeyboardInterrupt
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

    def _push_inputs(self, todo: list[Group]) -> None:
        """Remote mode: the outputs the tasks will pull (upstream, clean in-group stages)."""
        clean = [a for g in todo for a in g.stages if a not in self.initial_stale]
        targets = [*self.plan.upstream_of(self.wave), *clean]
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
