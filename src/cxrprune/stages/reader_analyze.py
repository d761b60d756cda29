"""DVC stage ``reader-analyze``: validate the readers' answers and compare PIEs with non-PIEs.

Reads the simulated readers' files (when ``reader.simulate``) and every ``*.csv``/``*.json``
export under ``reader.answers_dir``, joins them with the hidden key and writes
``metrics/<name>/reader.json`` (numbers, for ``dvc exp show``, and the name of each question's test),
``metrics/<name>/reader_validation.json`` (files read and every recorded decision),
``metrics/<name>/reader_answers.csv`` (the joined ratings), ``plots/<name>/reader_ratings.csv``
and ``plots/<name>/reader_study.png`` (beside, not inside, the analyze stage's ``figures/``
output), and logs the metrics to MLflow.
"""

from __future__ import annotations

import dataclasses
import sys

from cxrprune.core.atomic import write_csv, write_json
from cxrprune.core.config import Params
from cxrprune.reader.answers import find_answer_files, load_answers
from cxrprune.reader.figure import plot_reader_study
from cxrprune.reader.sample import load_key, load_manifest
from cxrprune.reader.stats import POOLED, summarize, summary_table
from cxrprune.core.stage import Stage
from cxrprune.tracking import store


STAGE = Stage(name="reader-analyze",
              help="validate readers' answers, PIE vs non-PIE tests, figure, MLflow")


def run(params: Params) -> None:
    cfg = params.reader
    name = params.data.name
    out = params.layout
    key = load_key(out.reader_key)
    manifest = load_manifest(out.reader_manifest)
    files = []
    if cfg.simulate:
        files += [(p, "simulated") for p in find_answer_files(out.reader_simulated)]
    files += [(p, "real") for p in find_answer_files(cfg.answers_dir)]
    ratings, report = load_answers(files, key, manifest, cfg.duplicates)

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
    write_json(out.reader_json, result)
    write_json(out.reader_validation, validation)
    write_csv(out.reader_answers, ratings)
    write_csv(out.reader_ratings, summary_table(summary))
    title = f"Reader study, {name}: {result['n_readers']} reader(s), {result['n_ratings']} rating(s)"
    plot_reader_study(summary, out.reader_figure, title)

    store.log_summary_run(params, "reader-analyze", f"reader-study-{name}", result,
                         {"data.name": name, **store.flatten("reader", dataclasses.asdict(params.reader))},
                         artifacts=[(p, "reader") for p in (out.reader_json, out.reader_validation,
                                                            out.reader_ratings, out.reader_figure)],
                         metric_prefix="reader")
    for line in report["decisions"]:
        print(f"reader-analyze: {line}", file=sys.stderr)
    if summary is None:
        print(f"reader study {name}: no answers yet; put the readers' exports in {cfg.answers_dir} and rerun "
              f"(`dvc repro {STAGE.name}`)")
        return
    pooled = summary[POOLED]
    parts = [f"{q} PIE {_fmt(s['pie_mean'])} vs non-PIE {_fmt(s['non_pie_mean'])} (image-level p {_fmt(s['p'])}, "
             f"{s['n_images_pie']} vs {s['n_images_non_pie']} images)" for q, s in pooled.items()]
    print(f"reader study {name}: {result['n_readers']} reader(s), {result['n_ratings']} ratings; "
          + "; ".join(parts) + f" -> {out.reader_json}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"

