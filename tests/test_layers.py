"""The packages of ``src/cxrprune`` form layers that point one way: a module imports only its
own package and the layers below it, and never a private (``_``-prefixed) name of another
package. The order is :data:`LAYERS`, the same as ``docs/ARCHITECTURE.md``'s "Layer order"
line; every import, at module level or inside a function, is read with ``ast``.

A package that needs something from a higher layer takes it as an argument (a callback, a
table) or the thing moves down; a private name another package needs is made public in its
home. Packages on one layer are peers: neither imports the other, so a new import between
them means one of them moves."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "cxrprune"

# Lowest first; the packages of one tuple are peers. ``cli`` and ``__main__`` are the modules
# ``src/cxrprune/cli.py`` and ``src/cxrprune/__main__.py``; ``cxrprune`` is the package's
# ``__init__.py``, which imports nothing of its own.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cxrprune",),
    ("core",),
    ("stats",),
    ("datasets",),
    ("training",),
    ("compression",),
    ("analysis",),
    ("tracking", "reader", "pietreatment", "intervention", "validation"),
    ("scaleout",),
    ("stages",),
    ("cli",),
    ("__main__",),
)
RANK = {name: rank for rank, tier in enumerate(LAYERS) for name in tier}
ORDER = " < ".join(", ".join(tier) for tier in LAYERS)


class Import(NamedTuple):
    line: int
    target: str  # the imported cxrprune module, absolute
    names: tuple[str, ...]  # names imported from it (``from m import a, b``), or ()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """``cxrprune.analysis.evaluate`` -> ``analysis``; ``cxrprune.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(source: str, module: str, is_package: bool = False) -> Iterator[Import]:
    """Every import of a ``cxrprune`` module in ``source`` (relative ones made absolute), and
    every ``alias._name`` read through a ``cxrprune`` module bound by an import."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> cxrprune module it names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cxrprune":
                    yield Import(node.lineno, alias.name, ())
                    bound[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "cxrprune":
                continue
            yield Import(node.lineno, base, tuple(a.name for a in node.names))
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield Import(node.lineno, bound[node.value.id], (node.attr,))


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What ``module`` (its text ``source``) does against the layers, one line each."""
    own = layer_of(module)
    found = []
    for imp in imports(source, module, is_package):
        other = layer_of(imp.target)
        if other == own:
            continue
        where = f"{module}:{imp.line}"
        if other not in RANK:
            found.append(f"{where} imports {imp.target}, whose package {other!r} has no layer; "
                         f"add it to LAYERS and docs/ARCHITECTURE.md ({ORDER})")
        elif RANK[other] >= RANK[own]:
            kind = "a peer" if RANK[other] == RANK[own] else "a higher layer"
            found.append(f"{where} (layer {own}) imports {imp.target} (layer {other}), {kind}; "
                         f"the order is {ORDER}")
        private = [n for n in (*imp.target.split(".")[1:], *imp.names)
                   if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
        if private:
            found.append(f"{where} uses private {', '.join(private)} of {imp.target} (package {other}); "
                         f"make it public in its home")
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    names = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    names = {"cxrprune" if n == "__init__" else n for n in names}
    assert names == set(RANK), (f"packages without a layer: {sorted(names - set(RANK))}; "
                                f"layers without a package: {sorted(set(RANK) - names)}")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    found = violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not found, "\n".join(found)


def test_the_architecture_doc_states_the_same_order():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    line = next((ln for ln in text.splitlines() if ln.startswith("Layer order")), None)
    assert line is not None, "docs/ARCHITECTURE.md has no 'Layer order' line"
    tiers = tuple(tuple(re.findall(r"`([\w.]+)`", tier)) for tier in line.split(":", 1)[1].split(" < "))
    assert tiers == LAYERS, f"docs/ARCHITECTURE.md says {tiers}, tests/test_layers.py says {LAYERS}"


@pytest.mark.parametrize(("module", "source", "message"), [
    ("cxrprune.training.loop", "from cxrprune.analysis.metrics import roc_auc\n",
     "cxrprune.training.loop:1 (layer training) imports cxrprune.analysis.metrics (layer analysis), a higher layer"),
    ("cxrprune.training.loop", "def f():\n    from ..analysis import metrics\n",
     "cxrprune.training.loop:2 (layer training) imports cxrprune.analysis (layer analysis)"),
    ("cxrprune.reader.page", "from cxrprune.tracking import store\n", "a peer"),
    ("cxrprune.compression.methods.l1_finetune", "from cxrprune.training.loop import _train_epoch\n",
     "cxrprune.compression.methods.l1_finetune:1 uses private _train_epoch of cxrprune.training.loop"),
    ("cxrprune.pietreatment.figure", "from cxrprune.analysis import figures\nfigures._figure()\n",
     "cxrprune.pietreatment.figure:2 uses private _figure of cxrprune.analysis.figures"),
    ("cxrprune.stages.train", "import cxrprune.training._hidden\n", "uses private _hidden"),
])
def test_the_check_catches(module, source, message):
    assert any(message in v for v in violations(source, module)), violations(source, module)


def test_the_check_allows():
    assert violations("from cxrprune.stats.metrics import roc_auc\nfrom . import augment\n"
                      "from cxrprune.training.loop import _x\n", "cxrprune.training.loop") == []
