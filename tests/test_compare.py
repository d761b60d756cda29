"""`cxrprune compare` over real DVC experiments of the tiny study (marked slow): the tiny
default (the shared tiny study, its results committed in a copy) and one experiment that
changes an axis, the methods (its trained models come from DVC's cache, so only prune and
after run), read back through `dvc exp show --json`. Other architectures and generator
draws are the same code path in compare; their training is tested in test_architectures.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from workspaces import commit_all, copy_workspace, env, run

from cxrprune.analysis import compare
from cxrprune.analysis.findings import CLAIMS


@pytest.mark.slow
def test_compare_lists_every_experiment_with_its_verdicts(tiny_study, tmp_path):
    ws = copy_workspace(tiny_study[0], tmp_path / "ws")
    commit_all(ws, "the tiny study's results")  # the baseline column: a commit with its findings
    base = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], ws).strip()
    # --temp: the experiment runs from HEAD in its own folder.
    ran = run(["dvc", "exp", "run", "--temp", "-n", "paper", "-S", "prune.methods=[l1,random]"], ws)
    assert "Running stage 'train@" not in ran and "Running stage 'prune@0'" in ran, ran[-3000:]
    out = run(["cxrprune", "compare"], ws)
    assert "2 experiment(s)" in out, out

    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=ws, env=env(), capture_output=True,
                                      text=True, check=True).stdout)
    experiments, _ = compare.collect(shown)
    by_name = {e.name: e for e in experiments}
    assert {base, "paper"} == by_name.keys()
    assert by_name[base].findings["findings"]["rare_forgotten_earlier"]["ci_lo"] is not None  # intervals arrive
    assert by_name["paper"].axes["prune.methods"] == "l1+random"
    assert by_name[base].axes["prune.methods"] == "l1+random+channel+int8"
    assert by_name[base].axes["train.arch"] == by_name["paper"].axes["train.arch"] == "resnet10"

    text = (ws / "reports/compare.md").read_text()
    assert (ws / "reports/compare.png").stat().st_size > 1000
    assert "calibration, not replication" in text
    header = next(line for line in text.splitlines() if line.startswith("| finding"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for name in (base, "paper"):
        col = columns.index(f"`{name}`")
        doc = by_name[name].findings
        for claim in CLAIMS:
            row = next(line for line in text.splitlines() if line.startswith(f"| {claim.title} |"))
            cell = [c.strip() for c in row.strip("|").split("|")][col]
            f = doc["findings"][claim.key]
            assert cell.startswith(compare.SYMBOL[f["verdict"]]), (name, claim.key, cell)
            if f.get("value") is not None:  # dvc exp show leaves out null metrics
                assert f"{f['value']:.3g}" in cell
                if f.get("ci_lo") is not None:
                    assert f"[{f['ci_lo']:.3g}, {f['ci_hi']:.3g}]" in cell
            else:
                assert "n/a" in cell


def _entry(rev: str, seed: int, value: float, name: str | None = None) -> dict:
    """One state as `dvc exp show --json` gives it: params.yaml and a findings report."""
    findings = {"calibration": True, "findings": {CLAIMS[0].key: {"verdict": "reproduced", "value": value}}}
    return {"rev": rev, "name": name, "data": {
        "params": {"params.yaml": {"data": {"synthetic": {"seed": seed}, "seeds": [0, 1]}}},
        "metrics": {"reports/synthetic/findings.json": {"data": findings}}}}


def test_an_unchanged_workspace_is_not_counted_twice():
    base = _entry("a" * 40, 0, 0.7, name="main")
    exp = _entry("b" * 40, 1, 0.6, name="synth-seed-1")
    clean = [dict(_entry("workspace", 0, 0.7)), dict(base, experiments=[{"revs": [exp]}])]
    assert [e.name for e in compare.collect(clean)[0]] == ["main", "synth-seed-1"]
    # A workspace whose params or results differ from every commit is its own column.
    edited = [_entry("workspace", 5, 0.7), dict(base, experiments=[{"revs": [exp]}])]
    assert [e.name for e in compare.collect(edited)[0]] == ["workspace", "main", "synth-seed-1"]
    rerun = [_entry("workspace", 0, 0.65), dict(base, experiments=[{"revs": [exp]}])]
    assert [e.name for e in compare.collect(rerun)[0]] == ["workspace", "main", "synth-seed-1"]
    text = compare.render(compare.collect(clean)[0], [], None)
    row = next(line for line in text.splitlines() if line.startswith(f"| {CLAIMS[0].title} |"))
    assert row.endswith("| 2/2 |"), row  # main and synth-seed-1, not the workspace again
