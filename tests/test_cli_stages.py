"""The CLI's table of commands is the stage modules' declarations (``STAGE = Stage(...)``):
the source reading the CLI lists them with agrees with the imported declarations, every DVC
stage is declared under its own name, ``--seed`` is checked once from ``fan_out``, and a
command imports only its own stage module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxrprune import cli
from cxrprune.core import stage as stages

REPO = Path(__file__).resolve().parents[1]
PIPELINES = ("dvc.yaml", "studies/pie-treatment/dvc.yaml", "studies/frequency-intervention/dvc.yaml")


def _dvc_stages() -> dict[str, dict]:
    out = {}
    for file in PIPELINES:
        out.update(yaml.safe_load((REPO / file).read_text())["stages"])
    return out


def test_declarations_read_from_source_are_the_imported_ones():
    declared = stages.declared()
    for name, d in declared.items():
        stage = stages.load(d.module).STAGE
        assert isinstance(stage, stages.Stage), d.module
        assert (stage.name, stage.help) == (d.name, d.help) == (name, d.help)
        assert d.module == name.replace("-", "_"), name


def test_every_dvc_stage_is_declared_with_its_fan_out():
    declared = stages.declared()
    for name, dvc in _dvc_stages().items():
        assert dvc["cmd"].split()[1] == name, name
        stage = stages.load(declared[name].module).STAGE
        per_seed = "seed" in dvc.get("matrix", {})
        assert (stage.fan_out is not None) == per_seed, name
        if per_seed:
            assert dvc["matrix"]["seed"] == f"${{{stage.fan_out}}}", name
        assert stage.produces, f"{name}: declares no output"


@pytest.mark.parametrize("argv, key", [(["train", "--seed", "7"], "seeds"),
                                       (["pie-fold", "--fold", "0", "--seed", "7"], "pie_treatment.seeds"),
                                       (["intervention-train", "--arm", "control", "--seed", "7"],
                                        "intervention.seeds"),
                                       (["log-mlflow", "--seed", "7"], "seeds")])
def test_a_seed_outside_params_is_one_error_naming_the_key(argv, key, capsys):
    assert cli.main(["--params", str(REPO / "params.yaml"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cxrprune: error: --seed 7 is not in params.yaml {key} [")
    assert len(err.strip().splitlines()) == 1


def test_a_command_imports_only_its_own_stage_module():
    code = ("import sys\nfrom cxrprune import cli\ncli.build_parser('generate')\n"
            "print(sorted(m for m in sys.modules if m.startswith('cxrprune.stages.')), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}).stdout
    assert out.strip() == "['cxrprune.stages.generate'] False"
