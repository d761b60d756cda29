"""dvc.yaml, the stages and the layout agree by construction: every stage's source deps are
exactly the modules its command imports, every output path is one of
:mod:`cxrprune.core.layout`'s, and no stage module imports another stage module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from stage_deps import SRC, expand, stage_sources

from cxrprune.core.config import load_params
from cxrprune.core.layout import ANALYZE_FIGURES, Layout

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


def _layout_paths(out: Layout) -> set[str]:
    paths = {out.prepared, out.models, out.predictions, out.figures, out.reader / "forms", out.reader / "manifest.csv",
             out.reader / "key.csv", out.reader / "sample.json", out.reader / "simulated", Path("data/raw/synthetic")}
    for attr in dir(Layout):
        value = getattr(out, attr)
        if isinstance(value, Path):
            paths.add(value)
    seeds = [0]
    paths |= {out.model_dir(s) for s in seeds} | {out.predictions_file(s) for s in seeds}
    paths |= {out.efficiency_file(s) for s in seeds}
    for stem in ("map_vs_sparsity", "forgettability_curves", "forgetting_vs_frequency", "fcd_pairs",
                 "pie_class_ratios", "pie_findings_ratios", "weight_histogram", "reader_ratings"):
        paths.add(out.plot_table(stem))
    return {str(p) for p in paths}


def test_every_output_is_a_layout_path():
    params = load_params(REPO / "params.yaml")
    known = _layout_paths(params.layout)
    for name, stage in STAGES.items():
        for entry in [*stage.get("outs", []), *stage.get("metrics", [])]:
            raw = next(iter(entry)) if isinstance(entry, dict) else entry
            path = _resolve(raw.replace("${item.seed}", "0"), params)
            assert path in known, f"{name}: output {path} is not built by cxrprune.core.layout"


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
