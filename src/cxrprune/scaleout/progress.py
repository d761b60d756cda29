"""The live view of a Ray run: per-stage state from the tasks (a Ray actor board), drawn as a
redrawn table or one line per change, with links to each stage's MLflow run."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cxrprune.scaleout.common import LOCAL_UI
from cxrprune.scaleout.plan import Group, StageSpec
from cxrprune.tracking.run_record import read_run_record

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
            record = read_run_record(candidate)
            try:
                return mlflow_link(record) if record is not None else None
            except KeyError:
                return None
    return None


class ProgressBoard:
    """A tiny Ray actor: tasks report here when they start and where (``num_cpus=0``)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start(self, addr: str, info: dict[str, Any]) -> None:
        attempts = self.started.get(addr, {}).get("attempts", 0)
        self.started[addr] = {**info, "attempts": attempts + 1}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.started)


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
