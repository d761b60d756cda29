"""DVC stage ``intervention-report`` (studies/frequency-intervention/dvc.yaml): every class's
forgetting in the arm where it is rare against the arm where it is common, the within-class
contrasts over classes and the verdict (:mod:`cxrprune.intervention.outcome`); writes
``metrics/<name>/frequency_intervention.json`` (for ``dvc exp show``), the per-class table
and the figure, then one MLflow run."""

from __future__ import annotations

import pandas as pd

from cxrprune.analysis.evaluate import per_class_metrics
from cxrprune.analysis.forgetting import train_counts
from cxrprune.compression import predictions
from cxrprune.core import upstream
from cxrprune.core.atomic import json_clean, write_csv, write_json
from cxrprune.core.config import Params, to_dict
from cxrprune.core.layout import producer
from cxrprune.datasets.prepare import load_label_tables
from cxrprune.intervention import arms, figure, outcome, study
from cxrprune.core.stage import Stage
from cxrprune.tracking import store

SHIFTS = (0.05, 0.1, 0.2)  # planted losses of mean retained AUROC at which the verdict's power is stated

STAGE = Stage(name="intervention-report",
              help="frequency intervention: each class rare vs common, sign-flip test over classes, "
                   "frequency_intervention.json, figure")


def run(params: Params) -> None:
    cfg, out = params.intervention, params.layout
    classes, (train_labels, test_labels) = load_label_tables(out.prepared, "train", "test")
    ids = test_labels["image_id"].astype(str).tolist()
    half = arms.halves(classes, cfg.assign_seed)
    summaries, seen = {}, {}
    for arm in arms.ARMS:
        tables = []
        for s in cfg.seeds:
            blocks = predictions.read_level_blocks(out.intervention_predictions(arm, s), ids, classes, study.METHOD,
                                                   params.prune.levels, producer("intervention_predictions", arm, s))
            tables.append(per_class_metrics(pd.concat(blocks, ignore_index=True), test_labels, classes, s,
                                            params.evaluate.f1_threshold, source=f"{arm} seed {s}"))
        summaries[arm] = outcome.arm_summary(pd.concat(tables, ignore_index=True), test_labels, classes,
                                             params.analyze.drop_threshold)
        record = upstream.read_json(out.intervention_train_set(arm, cfg.seeds[0]))
        seen[arm] = pd.Series(record["seen_positives"])
    table = outcome.per_class_table(summaries, half, seen, train_counts(train_labels, classes),
                                    test_labels[classes].sum(axis=0))
    result = outcome.contrasts(table)
    result["calibration"] = outcome.calibration(table.loc[table["excluded"] == "", "d_control"], SHIFTS)
    summary = {"arms": {a: arms.rare_classes(a, half) for a in arms.ARMS}, "keep": cfg.keep, "seeds": len(cfg.seeds),
               "classes": len(classes), "statistic": "mean over the compression levels of the median-over-seeds "
               "retained AUROC, (AUROC_k - 0.5) / (AUROC_0 - 0.5); contrasts within class, sign-flip test over "
               "classes", **result}
    write_json(out.intervention_json, json_clean(summary))
    write_csv(out.intervention_per_class, table)
    figure.rare_vs_common(table, out.intervention_figure)
    store.log_tagged_run(params, "intervention-report", "frequency-intervention",
                         {k: result[k] for k in ("frequency", "first_drop", "masking_control", "manipulation")},
                         {**store.flatten("intervention", to_dict(params)["intervention"]),
                          "data.name": params.data.name},
                         {"study": "frequency-intervention", "verdict": result["verdict"]},
                         artifacts=[(out.intervention_figure, "figures")])
    f = result["frequency"]
    print(f"intervention-report: {result['verdict']} (retained AUROC rare - common over {f['n']} classes: "
          f"mean {f['mean']}, p {f['p']}); {len(result['left_out'])} classes left out")
