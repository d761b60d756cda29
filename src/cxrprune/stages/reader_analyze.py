"""DVC stage ``reader-analyze``: validate the readers' answers and compare PIEs with non-PIEs.

Reads the simulated readers' files (when ``reader.simulate``) and every ``*.csv``/``*.json``
export under ``reader.answers_dir``, joins them with the hidden key and writes
``metrics/<name>/reader.json`` (numbers only, for ``dvc exp show``),
``metrics/<name>/reader_validation.json`` (files read and every recorded decision),
``metrics/<name>/reader_answers.csv`` (the joined ratings), ``plots/<name>/reader_ratings.csv``
and ``plots/<name>/reader_study.png`` (beside, not inside, the analyze stage's ``figures/``
output), and logs the metrics to MLflow.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from .. import tracking
from ..atomic import write_csv, write_json
from ..config import Params
from ..reader import study_dir
from ..reader.answers import find_answer_files, load_answers
from ..reader.figure import plot_reader_study
from ..reader.sample import load_key, load_manifest
from ..reader.stats import POOLED, summarize, summary_table


def run(params: Params) -> None:
    cfg = params.reader
    name = params.data.name
    study = study_dir(name)
    key = load_key(study / "key.csv")
    manifest = load_manifest(study / "manifest.csv")
    files = []
    if cfg.simulate:
        files += [(p, "simulated") for p in find_answer_files(study / "simulated")]
    files += [(p, "real") for p in find_answer_files(cfg.answers_dir)]
    ratings, report = load_answers(files, key, manifest, cfg.duplicates)

    metrics_dir, plots_dir = Path("metrics") / name, Path("plots") / name
    sources = ratings.groupby("source")["reader_id"].nunique().to_dict() if len(ratings) else {}
    result: dict = {
        "n_readers": int(ratings["reader_id"].nunique()), "n_ratings": int(len(ratings)),
        "n_cases_rated": int(ratings["case_id"].nunique()), "n_files": int(report["files"]),
        "n_readers_simulated": int(sources.get("simulated", 0)), "n_readers_real": int(sources.get("real", 0)),
        "unanswered_rows_dropped": report["unanswered_rows_dropped"],
        "identical_duplicates_dropped": report["identical_duplicates_dropped"],
        "conflicts_resolved": report["conflicts_resolved"],
        "repeat_image_ratings": int(report.get("repeat_image_ratings", 0)),
    }
    summary = summarize(ratings) if len(ratings) else None
    if summary is not None:
        result[POOLED] = summary[POOLED]
        result["readers"] = summary["readers"]
    validation = {**report, "file_list": [{"path": str(p), "source": s} for p, s in files],
                  "answers_dir": cfg.answers_dir}
    write_json(metrics_dir / "reader.json", result)
    write_json(metrics_dir / "reader_validation.json", validation)
    write_csv(metrics_dir / "reader_answers.csv", ratings)
    write_csv(plots_dir / "reader_ratings.csv", summary_table(summary))
    title = f"Reader study, {name}: {result['n_readers']} reader(s), {result['n_ratings']} rating(s)"
    plot_reader_study(summary, plots_dir / "reader_study.png", title)

    _log_mlflow(params, result, [metrics_dir / "reader.json", metrics_dir / "reader_validation.json",
                                 plots_dir / "reader_ratings.csv", plots_dir / "reader_study.png"])
    for line in report["decisions"]:
        print(f"reader-analyze: {line}", file=sys.stderr)
    if summary is None:
        print(f"reader study {name}: no answers yet; put the readers' exports in {cfg.answers_dir} and rerun "
              f"(`dvc repro reader-analyze`)")
        return
    pooled = summary[POOLED]
    parts = [f"{q} PIE {_fmt(s['pie_mean'])} vs non-PIE {_fmt(s['non_pie_mean'])} (KW p {_fmt(s['kruskal_p'])})"
             for q, s in pooled.items()]
    print(f"reader study {name}: {result['n_readers']} reader(s), {result['n_ratings']} ratings; "
          + "; ".join(parts) + f" -> {metrics_dir / 'reader.json'}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _log_mlflow(params: Params, result: dict, artifacts: list[Path]) -> None:
    experiment_id = tracking.start(params.mlflow)
    import mlflow

    metrics = {k: v for k, v in tracking.flatten("reader", result).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"reader-study-{params.data.name}",
                          tags={**tracking.context_tags(), "cxrprune_stage": "reader-analyze",
                                "dataset": params.data.name}) as run:
        run_id = run.info.run_id
        tracking.log_params(run_id, {"data.name": params.data.name,
                                     **tracking.flatten("reader", dataclasses.asdict(params.reader))})
        tracking.log_metrics(run_id, metrics)
        for path in artifacts:
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path="reader")
