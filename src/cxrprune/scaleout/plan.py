"""Planning a ``cxrprune repro --ray`` run: which ``dvc.yaml`` stages are per-seed (matrix
members), how they group into one chain per seed, which are out of date (DVC's own status),
and removing the partial outputs of a stage cut short."""

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
