"""dvc.yaml, the stages and the layout agree by construction: every stage's source deps are
exactly the modules its command imports, every output path of the three pipeline files is a
:mod:`cxrprune.core.layout` entry that the stage's declaration (``STAGE.produces``) lists and
whose producer is that stage, and no stage module imports another stage module."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml
from stage_deps import SRC, expand, stage_sources

from cxrprune.core import stage as stages
from cxrprune.core.config import load_params
from cxrprune.core.layout import ANALYZE_FIGURES, Layout, entries, producer, producer_of

REPO = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = {name: s for name, s in DVC["stages"].items() if s["cmd"].startswith("cxrprune ")}


def _command(stage: dict) -> str:
    return stage["cmd"].split()[1].replace("-", "_")


def test_every_dvc_stage_runs_a_stage_module():
    assert set(STAGES) == set(DVC["stages"])
    for name, stage in STAGES.items():
        assert (SRC / "cxrprune" / "stages" / f"{_command(stage)}.py").is_file(), name


@pytest.mark.parametrize("name", sorted(STAGES))
def test_source_deps_are_exactly_the_imported_modules(name):
    stage = STAGES[name]
    declared = [d for d in stage["deps"] if d.startswith("src/")]
    assert declared, f"{name}: no source deps"
    assert len(declared) == len(set(declared)), f"{name}: duplicated deps"
    got, want = expand(declared), set(stage_sources(_command(stage)))
    assert got == want, (f"{name}: dvc.yaml lists {sorted(got - want)} that the stage does not run and misses "
                         f"{sorted(want - got)}; paste `python tests/stage_deps.py {_command(stage)}`")


def _resolve(path: str, params) -> str:
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), path)


def _lookup(params, dotted: str):
    obj = params
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


PIPELINES = ("dvc.yaml", "studies/pie-treatment/dvc.yaml", "studies/frequency-intervention/dvc.yaml")


def _first_item(stage: dict, params) -> dict:
    """One item of a ``matrix`` stage (the first value of each key), {} for a plain stage."""
    item = {}
    for key, values in stage.get("matrix", {}).items():
        if isinstance(values, str):  # ${seeds}
            values = _lookup(params, values[2:-1])
        item[key] = values[0]
    return item


def _declared_paths(out: Layout, stage_name: str, item: dict) -> set[str]:
    """The paths of the Layout entries the stage's declaration says it writes, for ``item``
    (an entry's arguments are the matrix keys of the same names)."""
    paths = set()
    for entry in stages.load(stages.declared()[stage_name].module).STAGE.produces:
        value = getattr(out, entry)
        if callable(value):
            value = value(**{k: item[k] for k in inspect.signature(value).parameters})
        paths.add(value.as_posix())
    return paths


@pytest.mark.parametrize("file", PIPELINES)
def test_every_output_is_an_entry_its_stage_declares(file):
    params = load_params(REPO / "params.yaml")
    study = None if file == "dvc.yaml" else file
    for name, stage in yaml.safe_load((REPO / file).read_text())["stages"].items():
        item = _first_item(stage, params)
        declared = _declared_paths(params.layout, name, item)
        target = f"{name}@{'-'.join(str(v) for v in item.values())}" if item else name
        target = f"{study}:{target}" if study else target
        for entry in [*stage.get("outs", []), *stage.get("metrics", [])]:
            raw = next(iter(entry)) if isinstance(entry, dict) else entry
            path = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), raw)
            path = _resolve(path, params)
            assert path in declared, f"{file}:{name}: output {path} is not an entry its STAGE declares"
            # and the message of a stage that reads it names this stage
            assert producer_of(path) == target, f"{path}: producer_of says {producer_of(path)}, dvc says {target}"


def test_every_entry_has_a_declared_stage():
    names = set(stages.declared())
    for entry in entries():
        assert producer(entry).rpartition(":")[2] in names, entry


def test_producer_names_the_dvc_target():
    assert producer("predictions_file", 3) == "prune@3" == producer_of("data/predictions/x/seed-3.parquet")
    assert producer("predictions_file") == "prune"
    assert producer_of("/tmp/w/data/prepared/nih/meta.json") == "prepare"  # a file inside a directory entry
    assert producer_of("data/raw/synthetic/images/00000001_000.png") == "generate"
    assert producer("pie_treatment_train_set", "remove", 2) == "studies/pie-treatment/dvc.yaml:pie-retrain@remove-2"
    assert producer_of("metrics/x") is None and producer_of("elsewhere.csv") is None
    with pytest.raises(TypeError):
        producer("predictions_file", 1, 2)


def test_analyze_figures_are_the_ones_the_stage_writes():
    text = (SRC / "cxrprune" / "analysis" / "summary.py").read_text()
    written = re.findall(r'fig_dir / "([\w.]+\.png)"', text)
    assert sorted(written) == sorted(ANALYZE_FIGURES)


def test_no_stage_module_imports_another_stage_module():
    stages_dir = SRC / "cxrprune" / "stages"
    modules = {p.stem for p in stages_dir.glob("*.py") if p.stem != "__init__"}
    assert modules
    offenders = []
    for path in stages_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level == 1 or mod in ("cxrprune.stages",):
                    names = [a.name for a in node.names] if not mod or mod == "cxrprune.stages" else [mod]
                elif mod.startswith("cxrprune.stages."):
                    names = [mod.rsplit(".", 1)[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("cxrprune.stages.")]
            offenders += [f"{path.name} imports {n}" for n in names if n in modules]
    assert not offenders, offenders
