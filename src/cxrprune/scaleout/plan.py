"""Planning a ``cxrprune repro --ray`` run: which ``dvc.yaml`` stages are per-item (matrix
members: per seed, fold or treatment), how they group into one chain per item, in which
*waves* they run when plain stages sit between them, which are out of date (DVC's own
status), and removing the partial outputs of a stage cut short.

Waves: the root pipeline has one (``train@s -> prune@s`` for every seed, after ``generate``
and ``prepare``). A study such as ``studies/pie-treatment/dvc.yaml`` has plain stages
between matrix stages (``pie-fold@* -> pie-score -> pie-retrain@* -> pie-report``): wave 0
runs every ``pie-fold`` in parallel, then ``pie-score`` runs with ``dvc repro`` in order,
then wave 1 runs every ``pie-retrain`` in parallel, and ``dvc repro`` does the rest."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cxrprune.core.atomic import remove_path
from cxrprune.scaleout.common import ScaleoutError

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
class Wave:
    before: list[str]  # plain stages that must be reproduced (in order, by dvc repro) first
    groups: list[Group]  # the per-item chains of this wave, run in parallel


@dataclass
class Plan:
    root: Path
    targets: list[str]
    stages: dict[str, StageSpec]  # every per-item stage in scope, wave by wave
    waves: list[Wave]
    frozen: set[str] = field(default_factory=set)

    @property
    def upstream(self) -> list[str]:
        """The plain stages every per-item stage of the first wave depends on."""
        return self.waves[0].before if self.waves else []

    @property
    def groups(self) -> list[Group]:
        return [g for w in self.waves for g in w.groups]

    def upstream_of(self, wave: Wave) -> list[str]:
        """Every plain stage reproduced before ``wave`` (what its tasks read)."""
        out: list[str] = []
        for w in self.waves:
            out.extend(w.before)
            if w is wave:
                break
        return out


def is_seed_stage(stage: Any) -> bool:
    """A matrix (or foreach) member: ``train@3``, ``prune@a-0``."""
    return "@" in (getattr(stage, "name", None) or "")


def make_plan(root: str | os.PathLike, targets: Iterable[str] = ()) -> Plan:
    """The stages in scope, as ``dvc repro`` takes them: ``targets`` and their upstream, or
    without targets the workspace's ``dvc.yaml`` and its upstream (a study's pipeline file
    is opt-in there too). The per-item stages are split into waves at the plain stages
    between them, and grouped into chains within a wave."""
    import networkx as nx
    from dvc.dvcfile import PROJECT_FILE
    from dvc.repo import Repo

    root = Path(root).resolve()
    targets = list(targets or [])
    with contextlib.chdir(root), Repo(str(root)) as repo:  # stage addresses are relative to the cwd
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        scope: set = set()
        for target in targets or [PROJECT_FILE]:
            try:
                scope.update(repo.stage.collect(target, with_deps=True))
            except Exception as exc:  # dvc's StageNotFound and friends
                raise ScaleoutError(f"--targets {target}: {exc}") from None
        waves_of = _wave_numbers(graph.subgraph(scope))
        items = {s for s in scope if is_seed_stage(s)}
        specs: dict[str, StageSpec] = {}
        waves: list[Wave] = []
        for k in sorted({waves_of[s] for s in items}):
            members = {s for s in items if waves_of[s] == k}
            # the plain stages this wave needs that no earlier wave ran
            needed = {d for s in members for d in nx.descendants(graph, s) if d in scope and d not in items}
            before = sorted(d.addressing for d in needed if waves_of[d] == k)
            sub = graph.subgraph(members)
            groups: list[Group] = []
            for component in nx.weakly_connected_components(sub):
                order = list(nx.lexicographical_topological_sort(sub.subgraph(component).reverse(copy=True),
                                                                 key=lambda s: s.addressing))
                for s in order:
                    specs[s.addressing] = _spec(s, root, graph, component)
                groups.append(Group(_group_label([s.addressing for s in order]), [s.addressing for s in order]))
            groups.sort(key=lambda g: _natural_key(g.label))
            waves.append(Wave(before, groups))
        specs = {a: specs[a] for w in waves for g in w.groups for a in g.stages}
        frozen = {s.addressing for s in items if getattr(s, "frozen", False)}
        return Plan(root, targets, specs, waves, frozen)


def _wave_numbers(graph: Any) -> dict[Any, int]:
    """For a per-item stage, the wave it runs in; for a plain stage, the wave before which it
    must run: a plain stage downstream of wave ``k`` belongs before wave ``k + 1``."""
    import networkx as nx

    wave: dict[Any, int] = {}
    for stage in reversed(list(nx.topological_sort(graph))):  # dependencies first
        w = 0
        for dep in graph.successors(stage):
            w = max(w, wave[dep] + 1 if is_seed_stage(dep) and not is_seed_stage(stage) else wave[dep])
        wave[stage] = w
    return wave


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
