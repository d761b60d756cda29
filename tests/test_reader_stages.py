"""The reader-study stages end to end on a tiny study: sample, simulate, analyse, MLflow, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from reader_helpers import NAME, make_study, params_for

from cxrprune import cli
from cxrprune.core import stage as stages
from cxrprune.core.errors import DataError
from cxrprune.core.layout import Layout
from cxrprune.stages import reader_analyze, reader_sample, reader_simulate


def numeric_leaves(obj, path="") -> list[str]:
    """Paths of leaves that are not numbers (DVC metrics should be numbers only)."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in numeric_leaves(v, f"{path}.{k}")]
    ok = obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool))
    return [] if ok else [path]


def mlflow_in_test_folder(monkeypatch):
    """The reader-analyze run goes to a real sqlite store in the test's folder, not the repo's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_study(tmp_path, n_test=120, n_pies=24)
    return tmp_path


def test_cli_has_the_reader_commands():
    for name, module in (("reader-sample", "reader_sample"), ("reader-simulate", "reader_simulate"),
                         ("reader-analyze", "reader_analyze")):
        assert stages.declared()[name].module == module
    args = cli.build_parser().parse_args(["reader-analyze"])
    assert args.command == "reader-analyze"


@pytest.mark.slow
def test_the_simulated_loop_runs_end_to_end_into_mlflow(tiny):
    params = params_for(tiny, per_group=8, forms=3, simulated_readers=3)
    reader_sample.run(params)
    reader_simulate.run(params)
    reader_analyze.run(params)

    study = Layout(NAME).reader
    assert sorted(p.name for p in (study / "simulated").iterdir()) == [
        f"sim-{r}-form-{f}.csv" for r in (1, 2, 3) for f in (1, 2, 3)]
    result = json.loads(Path(f"metrics/{NAME}/reader.json").read_text())
    # numbers only, but for the name of each question's test
    assert [p for p in numeric_leaves(result) if not p.endswith(".test")] == []
    assert result["pooled"]["agree"]["test"].startswith("image-level")
    assert result["n_readers"] == 3 and result["n_readers_simulated"] == 3 and result["n_ratings"] == 3 * 48
    pooled = result["pooled"]
    # the fixture's PIEs are its flipped and degraded images: readers disagree more and rate them lower
    assert pooled["agree"]["pie_mean"] < pooled["agree"]["non_pie_mean"]
    assert pooled["quality"]["pie_mean"] < pooled["quality"]["non_pie_mean"]
    assert pooled["agree"]["p"] < 0.05 and pooled["agree"]["n_images_pie"] == 8 * 3  # per_group x forms
    assert set(result["readers"]) == {"sim-1", "sim-2", "sim-3"}
    table = pd.read_csv(f"plots/{NAME}/reader_ratings.csv")
    assert set(table["reader"]) == {"pooled", "sim-1", "sim-2", "sim-3"}
    answers = pd.read_csv(f"metrics/{NAME}/reader_answers.csv")
    assert len(answers) == 144 and answers["source"].eq("simulated").all()
    assert Path(f"plots/{NAME}/reader_study.png").stat().st_size > 10_000
    validation = json.loads(Path(f"metrics/{NAME}/reader_validation.json").read_text())
    assert validation["files"] == 9 and len(validation["file_list"]) == 9

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=params.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(params.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.cxrprune_stage = 'reader-analyze'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["reader.pooled.agree.pie_mean"] == pytest.approx(pooled["agree"]["pie_mean"])
    assert run.data.metrics["reader.n_ratings"] == 144
    assert run.data.params["reader.per_group"] == "8"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reader")}
    assert "reader/reader.json" in artifacts and "reader/reader_study.png" in artifacts


def test_real_exports_join_the_simulated_readers(tiny, monkeypatch):
    mlflow_in_test_folder(monkeypatch)
    params = params_for(tiny, per_group=5, forms=2)
    reader_sample.run(params)
    reader_simulate.run(params)
    manifest = pd.read_csv(Layout(NAME).reader / "manifest.csv", dtype=str)
    rows = manifest[manifest["form"] == "2"]
    export = pd.DataFrame({"form": 2, "study": rows["study"], "reader_id": "dr-b", "case_id": rows["case_id"],
                           "position": rows["position"], "agree": "yes", "quality": 4, "difficulty": 2,
                           "seconds": 9.5, "answered_at": "2024-01-01T10:00:00Z"})
    answers = Path(params.reader.answers_dir) / "site-a"
    answers.mkdir(parents=True)
    export.to_csv(answers / "answers-form-2-dr-b.csv", index=False)
    (answers.parent / "README.md").write_text("not an answer file")
    reader_analyze.run(params)
    result = json.loads(Path(f"metrics/{NAME}/reader.json").read_text())
    assert result["n_readers_real"] == 1 and result["n_readers_simulated"] == 2
    assert result["readers"]["dr-b"]["quality"]["n_pie"] == 5


def test_analysis_without_answers_waits_instead_of_failing(tiny, monkeypatch, capsys):
    mlflow_in_test_folder(monkeypatch)
    params = params_for(tiny, per_group=5, forms=1, simulate=False, simulated_readers=0)
    reader_sample.run(params)
    reader_simulate.run(params)
    assert [p.name for p in (Layout(NAME).reader / "simulated").iterdir()] == ["README.txt"]
    reader_analyze.run(params)
    assert "no answers yet" in capsys.readouterr().out
    result = json.loads(Path(f"metrics/{NAME}/reader.json").read_text())
    assert result["n_ratings"] == 0 and "pooled" not in result
    assert pd.read_csv(f"plots/{NAME}/reader_ratings.csv").empty
    assert Path(f"plots/{NAME}/reader_study.png").is_file()


def test_simulation_needs_the_synthetic_truth(tiny):
    params = params_for(tiny, per_group=5, forms=1)
    reader_sample.run(params)
    (Path(params.data.prepared_dir) / "truth.parquet").unlink()
    with pytest.raises(DataError, match="reader.simulate: false"):
        reader_simulate.run(params)


def test_invalid_real_answers_stop_the_analysis(tiny, monkeypatch):
    mlflow_in_test_folder(monkeypatch)
    params = params_for(tiny, per_group=5, forms=1)
    reader_sample.run(params)
    reader_simulate.run(params)
    answers = Path(params.reader.answers_dir)
    answers.mkdir(parents=True)
    (answers / "typo.csv").write_text("reader_id,case_id,agree,quality,difficulty\nr1,NOPE99,yes,3,3\n")
    with pytest.raises(DataError, match="unknown case id 'NOPE99'"):
        reader_analyze.run(params)
    assert not Path(f"metrics/{NAME}/reader.json").exists()


def test_missing_pies_point_to_the_analyze_stage(tiny):
    shutil.rmtree(f"metrics/{NAME}")
    with pytest.raises(DataError, match="dvc repro analyze"):
        reader_sample.run(params_for(tiny))


def test_cli_reports_errors_in_one_line(tiny, capsys):
    Path("params.yaml").write_text(f"data:\n  name: {NAME}\n  root: data/raw/{NAME}\nreader:\n  per_group: 500\n")
    assert cli.main(["reader-sample"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrprune: error:") and "reader.per_group" in err and len(err.splitlines()) == 1
