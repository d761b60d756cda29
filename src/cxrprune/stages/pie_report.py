"""DVC stage ``pie-report`` (studies/pie-treatment/dvc.yaml): the outcome of every treatment
on the test set (:mod:`cxrprune.pietreatment.outcome`), paired against ``baseline`` and
against ``remove_random``; writes ``metrics/<name>/pie_treatment.json`` (for ``dvc exp
show``), the per-class table, the AP-change plot table and figure, then one MLflow run.

Every comparison in the JSON carries its minimum detectable effect (``mde``, with
``sd_diff``) and a ``detectable`` sentence; ``detection`` records the level and power they
are stated at, so that a non-significant result is read against what 3 seeds could show. ``verdicts`` holds
each treatment's verdict over its whole family of tests (Holm) and the rule's error rates."""

from __future__ import annotations

import pandas as pd

from cxrprune.analysis.forgetting import train_counts
from cxrprune.core import upstream
from cxrprune.core.atomic import json_clean, write_csv, write_json
from cxrprune.core.config import Params, to_dict
from cxrprune.core.layout import producer
from cxrprune.datasets.prepare import load_label_tables
from cxrprune.pietreatment import figure, outcome, study, verdict
from cxrprune.core.stage import Stage
from cxrprune.tracking import store


STAGE = Stage(name="pie-report",
              help="PIE study: outcome of each treatment, paired tests, pie_treatment.json, figure")


def run(params: Params) -> None:
    cfg, out = params.pie_treatment, params.layout
    classes, (train_labels, test_labels) = load_label_tables(out.prepared, "train", "test")
    ids = test_labels["image_id"].astype(str).tolist()
    levels = params.prune.levels
    train_pies = upstream.read_json(out.pie_train_json)
    counts = train_counts(train_labels, classes)
    rare = outcome.rare_classes(counts)
    tables, blocks, sets = {}, {}, {}
    for t in cfg.treatments:
        for s in cfg.seeds:
            bl = study.read_table(out.pie_treatment_predictions(t, s), ids, classes, levels,
                                  producer("pie_treatment_predictions", t, s))
            tables[(t, s)] = pd.concat(bl, ignore_index=True)
            blocks[(t, s)] = bl
            sets[(t, s)] = upstream.read_json(out.pie_treatment_train_set(t, s))
    per_class = outcome.per_class_table(tables, test_labels, classes, params.evaluate.f1_threshold)
    k_pie = levels.index(params.analyze.pie_sparsity)
    results = {t: outcome.treatment_outcome(per_class.loc[per_class["treatment"] == t].drop(columns="treatment"),
                                            rare, classes, params.analyze.drop_threshold,
                                            [blocks[(t, s)][0] for s in cfg.seeds],
                                            [blocks[(t, s)][k_pie] for s in cfg.seeds],
                                            params.analyze.pie_fraction, {s: sets[(t, s)] for s in cfg.seeds})
               for t in cfg.treatments}
    base_pies = results["baseline"].test_pies
    treatments = {t: {**r.summary, "test_pie_overlap": outcome.overlap(r.test_pies, base_pies)}
                  for t, r in results.items()}
    summary = {"train_pies": train_pies, "rare_classes": rare, "top_sparsity": max(levels),
               "treatments": treatments,
               "detection": {"alpha": outcome.ALPHA, "power": outcome.POWER, "seeds": len(cfg.seeds),
                             "test": "two-sided paired t-test over seeds; mde: exact noncentral t, observed SD"},
               "vs_baseline": outcome.comparisons(results, "baseline")}
    if "remove_random" in results:
        summary["vs_remove_random"] = outcome.comparisons(results, "remove_random")
    summary["verdicts"] = verdict.verdicts({ref: summary[f"vs_{ref}"] for ref in verdict.REFERENCES
                                            if f"vs_{ref}" in summary}, len(cfg.seeds))
    changes = outcome.class_changes(results, counts)
    write_json(out.pie_treatment_json, json_clean(summary))
    write_csv(out.pie_treatment_per_class, per_class)
    write_csv(out.pie_treatment_ap_change, changes)
    figure.ap_change(changes, out.pie_treatment_figure)
    store.log_tagged_run(params, "pie-report", "pie-treatment", summary,
                  {**store.flatten("pie_treatment", to_dict(params)["pie_treatment"]), "data.name": params.data.name},
                  {"study": "pie-treatment", **{f"verdict.{t}": v["verdict"] for t, v in summary["verdicts"].items()}},
                  artifacts=[(out.pie_treatment_figure, "figures")])
    line = "; ".join(f"{t}: mAP {v['map_dense']:.3f}, rare AP {v['rare_ap_dense']:.3f}" for t, v in treatments.items())
    print(f"pie-report: {line}")
    for ref in ("baseline", "remove_random"):
        for t, c in summary.get(f"vs_{ref}", {}).items():
            print(f"pie-report: {t} vs {ref}: {c['detectable']}")
    for t, v in summary["verdicts"].items():
        print(f"pie-report: {t} {v['verdict']} (false-positive rate of the rule "
              f"{_rate(v['calibration']['false_positive_rate'])}, simulated)")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
