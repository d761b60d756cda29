"""The source files each ``cxrprune <stage>`` command runs: the transitive closure of the
``cxrprune`` modules its stage module imports (module level and inside functions), read
with ``ast``, plus the implementation modules that the catalog (``cxrprune.core.catalog``)
names for every module of :data:`CATALOG_LOADERS` in that closure. ``tests/test_layout.py`` checks ``dvc.yaml``'s ``deps`` against it, and
``python tests/stage_deps.py --write dvc.yaml studies/pie-treatment/dvc.yaml`` rewrites them
after a stage's imports change (``python tests/stage_deps.py <stage>`` prints one list)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The modules that import implementations by their catalog names (``catalog.load``), and the
# catalog table whose entries each one loads: a stage that imports one of them runs the
# implementation modules of every entry of that table.
CATALOG_LOADERS = {
    "cxrprune.compression.methods.registry": "METHODS",
    "cxrprune.training.models": "ARCHITECTURES",
    "cxrprune.datasets.sources": "SOURCES",
}


@functools.cache
def catalog_modules(table: str) -> frozenset[str]:
    """The implementation modules the entries of ``catalog.<table>`` name, read from this
    checkout's file (not an installed copy, nor one that a test registered entries in)."""
    name = "_stage_deps_catalog"
    spec = importlib.util.spec_from_file_location(name, SRC / "cxrprune" / "core" / "catalog.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return frozenset(entry.implementation.partition(":")[0] for entry in getattr(module, table).values())


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """Absolute names of the cxrprune modules ``path`` imports."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cxrprune")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("cxrprune"):
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    for name in list(out):
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return {m for m in out if module_file(m)}


def closure(module: str) -> set[Path]:
    """Files (relative to the repository root) that running ``module`` may import."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imported_modules(module_file(m), m) - seen)
        if m in CATALOG_LOADERS:
            todo.extend(catalog_modules(CATALOG_LOADERS[m]) - seen)
    return {module_file(m).relative_to(SRC.parent) for m in seen}


def stage_sources(stage_module: str) -> list[str]:
    """Sorted source paths of ``cxrprune.stages.<stage_module>`` and all it imports, plus the
    package data files the stage reads (the reader page's HTML/CSS/JS)."""
    files = {str(p) for p in closure(f"cxrprune.stages.{stage_module}")}
    if any(f.startswith("src/cxrprune/reader/page.py") for f in files):
        files |= {f"src/cxrprune/reader/page.{ext}" for ext in ("html", "css", "js")}
    return sorted(files)


def package_files(folder: Path) -> set[str]:
    """Every source file DVC hashes under ``folder`` (``.dvcignore`` skips byte code)."""
    return {str(p.relative_to(SRC.parent)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def compact(files: list[str]) -> list[str]:
    """``files`` with every folder whose files are all listed written as the folder (the
    shortest ``deps`` list that names exactly these files)."""
    wanted = set(files)
    out: set[str] = set(files)
    folders = sorted({str(Path(f).parent) for f in files}, key=lambda s: s.count("/"))
    for folder in folders:
        if folder == "src/cxrprune":
            continue  # the package root holds the CLI and __main__, which no stage imports
        inside = package_files(SRC.parent / folder)
        if inside and inside <= wanted:
            out = {f for f in out if not f.startswith(folder + "/")} | {folder}
    # a folder already covered by a parent folder
    return sorted(f for f in out if not any(f.startswith(o + "/") for o in out if o != f))


def expand(deps: list[str]) -> set[str]:
    """The source files a ``deps`` list names (folders expanded)."""
    out: set[str] = set()
    for d in deps:
        path = SRC.parent / d
        out |= package_files(path) if path.is_dir() else {d}
    return out


def check_study_file(doc: dict, known: set[Path], items: dict[str, str]) -> None:
    """A study's pipeline file: every stage runs at the root (wdir ../..), its source deps are
    its import closure, and every out is a ``Layout`` path in ``known`` once ``${data.name}``
    is ``synthetic`` and each ``${item.<key>}`` is ``items[key]``."""
    for name, stage in doc["stages"].items():
        assert stage["wdir"] == "../..", name
        module = stage["cmd"].split()[1].replace("-", "_")
        declared = [d for d in stage["deps"] if d.startswith("src/")]
        assert expand(declared) == set(stage_sources(module)), f"paste `python tests/stage_deps.py {module}`"
        for entry in [*stage.get("outs", []), *stage.get("metrics", [])]:
            path = (next(iter(entry)) if isinstance(entry, dict) else entry).replace("${data.name}", "synthetic")
            for key, value in items.items():
                path = path.replace("${item.%s}" % key, value)
            assert Path(path) in known, f"{name}: {path} is not built by cxrprune.core.layout"


def rewrite_deps(dvc_file: Path) -> None:
    """Replace the ``src/cxrprune`` deps of every ``cxrprune <stage>`` stage of ``dvc_file``
    with its import closure (other deps and the file's layout kept)."""
    import re

    lines = dvc_file.read_text().splitlines(keepends=True)
    out: list[str] = []
    stage, in_deps, inserted, cmd_of = None, False, False, {}

    def closure_lines() -> list[str]:
        return [f"      - {f}\n" for f in compact(stage_sources(cmd_of[stage]))]

    for line in lines:
        if m := re.match(r"^  ([\w-]+):\s*$", line):
            stage, in_deps = m.group(1), False
        if m := re.match(r"^    cmd: cxrprune ([\w-]+)", line):
            cmd_of[stage] = m.group(1).replace("-", "_")
        if re.match(r"^    deps:\s*$", line):
            in_deps, inserted = True, False
            out.append(line)
            continue
        if in_deps:
            if re.match(r"^      - ", line):
                if "src/cxrprune" in line:
                    if not inserted:
                        out.extend(closure_lines())
                        inserted = True
                    continue
                out.append(line)
                continue
            if not inserted and stage in cmd_of:
                out.extend(closure_lines())
                inserted = True
            in_deps = False
        out.append(line)
    dvc_file.write_text("".join(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:  # python tests/stage_deps.py --write dvc.yaml [more dvc.yaml files]
        for f in sys.argv[2:]:
            rewrite_deps(Path(f))
        sys.exit(0)
    for name in sys.argv[1:]:
        print(f"{name}:")
        for f in compact(stage_sources(name)):
            print(f"      - {f}")
