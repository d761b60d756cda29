"""`cxrprune compare` over real DVC experiments of the tiny study (marked slow): the tiny
default (the shared tiny study, its results committed in a copy) and one experiment that
changes an axis, the methods (its trained models come from DVC's cache, so only prune and
after run), read back through `dvc exp show --json`. Other architectures and generator
draws are the same code path in compare; their training is tested in test_architectures.py.
The fast tests check the counting per draw of the data and the committed snapshot that
`cxrprune compare --from` rebuilds the table from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from workspaces import REPO, commit_all, copy_workspace, env, run

from cxrprune import cli
from cxrprune.analysis import compare
from cxrprune.analysis.findings import CLAIMS, NOT_REPRODUCED, REPRODUCED
from cxrprune.core.config import load_params
from cxrprune.stages import compare as stage


@pytest.mark.slow
def test_compare_lists_every_experiment_with_its_verdicts(tiny_study, tmp_path):
    ws = copy_workspace(tiny_study[0], tmp_path / "ws")
    commit_all(ws, "the tiny study's results")  # the baseline column: a commit with its findings
    base = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], ws).strip()
    # --temp: the experiment runs from HEAD in its own folder.
    ran = run(["dvc", "exp", "run", "--temp", "-n", "paper", "-S", "prune.methods=[l1,random]"], ws)
    assert "Running stage 'train@" not in ran and "Running stage 'prune@0'" in ran, ran[-3000:]
    out = run(["cxrprune", "compare"], ws)
    assert "2 experiment(s) of 1 data draw(s)" in out, out  # the same data, other methods: one draw

    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=ws, env=env(), capture_output=True,
                                      text=True, check=True).stdout)
    experiments, _ = compare.collect(shown)
    by_name = {e.name: e for e in experiments}
    assert {base, "paper"} == by_name.keys()
    assert by_name[base].findings["findings"]["pie_3plus"]["ci_lo"] is not None  # intervals arrive
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
    draw_row = next(line for line in text.splitlines() if line.startswith("| *draw* |"))
    assert draw_row == "| *draw* | 1 | 1 |  |", draw_row
    for claim in CLAIMS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim.title} |"))
        assert re.fullmatch(r"(0 of 0 draws|[01] of 1 draw(, 1 split)?)", row.strip("|").split("|")[-1].strip()), row

    # What was read is committed beside the table, and rebuilds it without the experiments' refs.
    index = json.loads((ws / "reports/compare/experiments.json").read_text())
    folders = {x["name"]: x["folder"] for x in index["experiments"]}
    assert folders.keys() == {base, "paper"}
    for name, folder in folders.items():
        assert json.loads((ws / "reports/compare" / folder / "findings.json").read_text()) == by_name[name].findings
        assert yaml.safe_load((ws / "reports/compare" / folder / "params.yaml").read_text()) == by_name[name].params
    prepared = {x["prepared"] for x in index["experiments"]}
    assert len(prepared) == 1 and next(iter(prepared)).endswith(".dir"), index  # dvc.lock's md5 of the prepare stage
    run(["dvc", "exp", "remove", "paper"], ws)
    out = run(["cxrprune", "compare", "--from", "reports/compare"], ws)
    assert "2 experiment(s) of 1 data draw(s)" in out, out
    assert (ws / "reports/compare.md").read_text() == text


def _entry(rev: str, seed: int, value: float, name: str | None = None, prepared: str | None = None) -> dict:
    """One state as `dvc exp show --json` gives it: params.yaml and a findings report."""
    findings = {"calibration": True, "findings": {CLAIMS[0].key: {"verdict": "reproduced", "value": value}}}
    return {"rev": rev, "name": name, "data": {
        "params": {"params.yaml": {"data": {"synthetic": {"seed": seed}, "seeds": [0, 1]}}},
        "metrics": {"reports/synthetic/findings.json": {"data": findings}},
        "outs": {"data/prepared/synthetic": {"hash": prepared, "size": 1, "nfiles": 1}}}}


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
    text = compare.render(compare.collect(clean)[0], [], None, stage.COMPARE_SNAPSHOT)
    row = next(line for line in text.splitlines() if line.startswith(f"| {CLAIMS[0].title} |"))
    assert row.endswith("| 2 of 2 draws |"), row  # main and synth-seed-1, not the workspace again


# ------------------------------------------------------------------ draws and the snapshot


def _exp(name: str, data: dict | None = None, seed: int = 0, prepared: str | None = None) -> compare.Experiment:
    params = {"data": data or {}, "synthetic": {"seed": seed}, "seeds": [0, 1]}
    return compare.Experiment(name, "", params, {"calibration": True, "findings": {}}, prepared)


def test_experiments_on_one_draw_of_the_data_are_grouped():
    """Linked by the prepared data's md5 or by the params that decide the sample; either link merges."""
    exps = [_exp("a", prepared="x.dir"),
            _exp("b", {"image_size": 48, "workers": 2}, prepared="y.dir"),  # the same sample, resampled
            _exp("c", seed=1, prepared="z.dir"),
            _exp("d", {"name": "other"}, seed=1),  # another folder name, no hash: the same sample
            _exp("e", seed=2, prepared="x.dir"),  # other params, the same bytes as a
            _exp("f", {"root": "/data/nih"}, seed=0),  # real data: the generator's seed means nothing
            _exp("g", {"root": "/data/nih"}, seed=5),
            _exp("h", {"root": "/data/nih", "source": "csv"})]
    assert [[e.name for e in g] for g in compare.draws(exps)] == [["a", "b", "e"], ["c", "d"], ["f", "g"], ["h"]]


def _write_experiment(folder: Path, seed: int, verdicts: dict[str, str], arch: str = "resnet10") -> None:
    """One experiment as `cxrprune compare` commits it: its findings.json and params.yaml."""
    folder.mkdir(parents=True)
    findings = {key: {"verdict": v, "value": 0.5, "ci_lo": 0.1, "ci_hi": 0.9} for key, v in verdicts.items()}
    (folder / "findings.json").write_text(json.dumps({"calibration": True, "findings": findings}))
    (folder / "params.yaml").write_text(yaml.safe_dump({"seeds": [0, 1], "data": {"name": "synthetic"},
                                                         "synthetic": {"seed": seed}, "train": {"arch": arch}}))


def _compare_from(folder: Path, cwd: Path, monkeypatch) -> int:
    monkeypatch.chdir(cwd)
    return cli.main(["--params", str(REPO / "params.yaml"), "compare", "--from", str(folder)])


def _last_cell(text: str, title: str) -> str:
    row = next(line for line in text.splitlines() if line.startswith(f"| {title} |"))
    return row.strip().strip("|").split("|")[-1].strip()


def test_from_a_committed_folder_counts_draws_not_experiments(tmp_path, monkeypatch):
    """Three experiments of two draws: reproduced in both experiments of one draw and not in the
    other draw is 1 of 2 draws, not 2 of 3; a draw whose experiments disagree does not count."""
    snap = tmp_path / "snapshot"
    both, split, gap = CLAIMS[0].key, CLAIMS[1].key, CLAIMS[2].key
    _write_experiment(snap / "a-resnet", 0, {both: REPRODUCED, split: REPRODUCED, gap: REPRODUCED})
    _write_experiment(snap / "b-densenet", 0, {both: REPRODUCED, split: NOT_REPRODUCED}, arch="densenet121")
    _write_experiment(snap / "c-seed-1", 1, {both: NOT_REPRODUCED, split: REPRODUCED, gap: REPRODUCED})
    assert _compare_from(snap, tmp_path, monkeypatch) == 0
    text = (tmp_path / "reports/compare.md").read_text()
    assert (tmp_path / "reports/compare.png").stat().st_size > 1000
    assert "| finding | `a-resnet` | `b-densenet` | `c-seed-1` | reproduced |" in text
    assert "| *draw* | 1 | 1 | 2 |  |" in text
    assert _last_cell(text, CLAIMS[0].title) == "1 of 2 draws"
    assert _last_cell(text, CLAIMS[1].title) == "1 of 2 draws, 1 split"
    assert f"- {CLAIMS[1].title}: draw 1 (`a-resnet` ✅, `b-densenet` ❌)" in text
    assert _last_cell(text, CLAIMS[2].title) == "2 of 2 draws"  # not measured in b: not a disagreement
    assert _last_cell(text, CLAIMS[3].title) == "0 of 0 draws"
    assert "- draw 1: `a-resnet`, `b-densenet`; prepared data not in dvc.lock; synthetic.seed 0" in text
    assert "Every draw trains the same `seeds` (0, 1)" in text
    assert not (tmp_path / "reports/compare").exists()  # --from reads a snapshot, writes none


def test_what_was_read_is_committed_and_rebuilds_the_same_table(tmp_path, monkeypatch):
    """`cxrprune compare` writes each experiment's findings.json and params.yaml as read, with
    the order and the prepared-data hashes; `--from` rebuilds compare.md byte for byte."""
    main = _entry("a" * 40, 0, 0.7, name="main", prepared="d0.dir")
    exps = [{"revs": [_entry("b" * 40, 0, 0.6, name="feature/arch", prepared="d0.dir")]},
            {"revs": [_entry("c" * 40, 1, 0.5, name="synth-seed-1", prepared="d1.dir")]},
            {"revs": [{"rev": "d" * 40, "name": "broken", "data": {}}]}]
    monkeypatch.setattr(stage, "_exp_show", lambda all_commits: [dict(main, experiments=exps)])
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    stage.run(params)
    text = Path("reports/compare.md").read_text()
    index = json.loads(Path("reports/compare/experiments.json").read_text())
    assert [(x["name"], x["folder"], x["prepared"]) for x in index["experiments"]] == [
        ("main", "main", "d0.dir"), ("feature/arch", "feature-arch", "d0.dir"), ("synth-seed-1", "synth-seed-1", "d1.dir")]
    assert index["skipped"] and index["skipped"][0].startswith("broken:")
    read = compare.collect([dict(main, experiments=exps)])[0]
    for e, x in zip(read, index["experiments"]):
        folder = Path("reports/compare") / x["folder"]
        assert json.loads((folder / "findings.json").read_text()) == e.findings
        assert yaml.safe_load((folder / "params.yaml").read_text()) == e.params
    assert _last_cell(text, CLAIMS[0].title) == "2 of 2 draws"  # main and feature/arch are one draw
    assert "- draw 1: `main`, `feature/arch`; prepared data `d0.dir`; synthetic.seed 0" in text
    assert "Not shown (no findings report): broken:" in text

    Path("reports/compare.md").unlink()
    stage.run(params, from_dir="reports/compare")
    assert Path("reports/compare.md").read_text() == text
    # Run again from dvc exp show with fewer experiments: no stale folder is left behind.
    monkeypatch.setattr(stage, "_exp_show", lambda all_commits: [main])
    stage.run(params)
    assert sorted(p.name for p in Path("reports/compare").iterdir()) == ["experiments.json", "main"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "findings.json").unlink(), "findings.json: not found"),
    (lambda d: (d / "findings.json").write_text("{"), "findings.json: not valid JSON"),
    (lambda d: (d / "findings.json").write_text("{}"), "findings.json: not a findings report"),
    (lambda d: (d / "params.yaml").unlink(), "params.yaml: not found"),
    (lambda d: (d / "params.yaml").write_text("seeds: [0, 1"), "params.yaml: not valid YAML"),
    (lambda d: (d / "params.yaml").write_text("- 0\n- 1\n"), "params.yaml: not a mapping"),
])
def test_a_bad_snapshot_is_one_error_naming_the_file(tmp_path, monkeypatch, capsys, damage, message):
    snap = tmp_path / "snapshot"
    _write_experiment(snap / "a", 0, {CLAIMS[0].key: REPRODUCED})
    _write_experiment(snap / "b", 1, {CLAIMS[0].key: REPRODUCED})
    damage(snap / "b")
    assert _compare_from(snap, tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cxrprune: error: ") and len(err.splitlines()) == 1, err
    assert f"{snap / 'b'}/{message}" in err, err
    assert not (tmp_path / "reports/compare.md").exists()


def test_a_snapshot_index_must_list_every_folder(tmp_path, monkeypatch, capsys):
    snap = tmp_path / "snapshot"
    _write_experiment(snap / "a", 0, {CLAIMS[0].key: REPRODUCED})
    _write_experiment(snap / "extra", 1, {CLAIMS[0].key: REPRODUCED})
    (snap / "experiments.json").write_text(json.dumps({"experiments": [{"name": "a", "folder": "a"}], "skipped": []}))
    assert _compare_from(snap, tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "experiments.json: does not list the folder(s) ['extra']" in err, err


def test_a_named_comparison_of_matching_experiments_writes_its_own_files(tmp_path, monkeypatch, capsys):
    """`--only` keeps the experiments whose name matches (the calibration's planted draws apart from
    its negative-control draws); `--name` writes reports/NAME.md and .png, leaving compare.md alone."""
    snap = tmp_path / "snapshot"
    key = CLAIMS[0].key
    _write_experiment(snap / "planted-1", 1, {key: REPRODUCED})
    _write_experiment(snap / "planted-2", 2, {key: REPRODUCED})
    _write_experiment(snap / "none-1", 3, {key: NOT_REPRODUCED})
    monkeypatch.chdir(tmp_path)
    base = ["--params", str(REPO / "params.yaml"), "compare", "--from", str(snap)]
    assert cli.main([*base, "--name", "calibration-planted", "--only", "planted-*"]) == 0
    text = (tmp_path / "reports/calibration-planted.md").read_text()
    assert "| finding | `planted-1` | `planted-2` | reproduced |" in text
    assert _last_cell(text, CLAIMS[0].title) == "2 of 2 draws"
    assert (tmp_path / "reports/calibration-planted.png").stat().st_size > 1000
    assert not (tmp_path / "reports/compare.md").exists()
    assert cli.main([*base, "--name", "x", "--only", "nothing-*"]) == 2
    assert "--only nothing-*: no experiment" in capsys.readouterr().err
    assert cli.main([*base, "--name", "../escape"]) == 2
    assert "--name '../escape'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["compare", "calibration-frequency", "calibration-pie-routes", "calibration-none"])
def test_each_committed_comparison_rebuilds_from_its_snapshot(tmp_path, monkeypatch, name):
    """The committed tables (README: the compare table and the calibration's three arms: the
    `frequency` route alone, the PIE routes alone, nothing planted) are what `cxrprune
    compare --from reports/NAME --name NAME` writes from the committed snapshot alone, so they
    regenerate from the repository."""
    committed = REPO / "reports" / f"{name}.md"
    assert committed.exists() and (REPO / "reports" / name).is_dir(), f"reports/{name}.md or its snapshot is missing"
    snapshot = tmp_path / "reports" / name
    shutil.copytree(REPO / "reports" / name, snapshot)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--params", str(REPO / "params.yaml"), "compare", "--from", f"reports/{name}",
                     "--name", name]) == 0
    assert (tmp_path / "reports" / f"{name}.md").read_text() == committed.read_text()
