"""DVC stage ``pie-score`` (studies/pie-treatment/dvc.yaml): the out-of-fold Spearman
correlation of every training image, the training-set PIEs, and on synthetic data their
precision and recall for flipped labels and degraded images against the truth table."""

from __future__ import annotations

from cxrprune.analysis.pies import align_truth
from cxrprune.core import upstream
from cxrprune.core.atomic import json_clean, write_csv, write_json
from cxrprune.core.config import Params
from cxrprune.core.layout import producer
from cxrprune.datasets.prepare import load_label_tables
from cxrprune.pietreatment import folds as oof
from cxrprune.pietreatment import study
from cxrprune.core.stage import Stage


STAGE = Stage(name="pie-score",
              help="PIE study: out-of-fold training-set PIEs, checked against the synthetic truth")


def run(params: Params) -> None:
    out, cfg = params.layout, params.pie_treatment
    classes, (labels,) = load_label_tables(out.prepared, "train")
    fold = study.folds_of(params, labels, classes)
    ids = labels["image_id"].astype(str).to_numpy()
    levels = [0.0, params.analyze.pie_sparsity]
    scored = {f: [tuple(study.read_table(out.pie_fold_predictions(f, s), ids[fold == f].tolist(), classes, levels,
                                         producer("pie_fold_predictions", f, s)))
                  for s in cfg.seeds] for f in cfg.folds}
    corr = oof.out_of_fold_correlation(fold, ids, scored, classes)
    is_pie = oof.train_pies(corr, params.analyze.pie_fraction)
    table = labels[["image_id", "patient_id"]].assign(fold=fold, spearman=corr, is_pie=is_pie)
    summary = {"n_train": len(labels), "count": int(is_pie.sum()), "folds": len(cfg.folds),
               "seeds": len(cfg.seeds), "fraction": params.analyze.pie_fraction,
               "sparsity": params.analyze.pie_sparsity}
    if out.truth.exists():  # synthetic data only
        truth = align_truth(upstream.read_parquet(out.truth), ids, split="train")
        table = table.assign(flipped=truth["flipped"].to_numpy(), degradation=truth["degradation"].to_numpy())
        summary["truth"] = oof.truth_summary(truth, is_pie)
    write_csv(out.pie_train_scores, table)
    write_json(out.pie_train_json, json_clean(summary))
    line = f"pie-score: {summary['count']} training PIEs of {len(labels)} images (out of fold, {len(cfg.folds)} folds)"
    if "truth" in summary:
        t = summary["truth"]
        line += "".join(f"; {k}: precision {v['precision']:.3f} vs base rate {v['base_rate']:.3f}, recall "
                        f"{v['recall'] if v['recall'] is not None else float('nan'):.3f}" for k, v in t.items())
    print(line)
