"""DVC stage ``analyze``: forgettability, FCD, PIEs, weight magnitudes, summary and figures.

Reads the evaluate stage's tables, the prepared labels, the L1 predictions at k = 0 and
k = ``analyze.pie_sparsity`` of every seed, and the first seed's checkpoint; the analyses
are :func:`cxrprune.analysis.summary.analyze`. Writes ``metrics/<name>/summary.json`` (the
file ``dvc exp show`` reads), the PIE and forgettability tables, long CSVs for ``dvc plots``
and PNG figures, all atomically, with the operating points of every compression method
(``summary.json`` ``operating_points``), their efficiency (``metrics/<name>/efficiency.csv``
from the prune stage's per-seed files) and the Pareto figure; then logs the summary and the figures to one MLflow run
("analysis"), after the DVC outputs exist so a tracking failure loses no results.
"""

from __future__ import annotations

from cxrprune.analysis import cost_accuracy
from cxrprune.analysis import summary as analysis
from cxrprune.analysis import uncertainty
from cxrprune.compression import predictions
from cxrprune.core import upstream
from cxrprune.core.config import Params, to_dict
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.core.stage import Stage
from cxrprune.tracking import store
from cxrprune.training.modelfile import load_checkpoint


STAGE = Stage(name="analyze",
              help="forgettability, FCD, PIEs, summary.json, plots")


def run(params: Params) -> None:
    cfg, out = params.analyze, params.layout
    meta = load_meta(out.prepared)
    classes: list[str] = list(meta["classes"])
    per_class = upstream.read_level_table(out.per_class)
    evaluation = upstream.read_json(out.evaluation)
    map_curve = upstream.read_level_table(out.map_curve)
    train_labels, _ = load_split(out.prepared, "train")
    test_labels, _ = load_split(out.prepared, "test")
    truth = upstream.read_parquet(out.truth) if out.truth.exists() else None  # synthetic data only
    dense, sparse = [], []
    for seed in params.seeds:
        d, s = predictions.read_blocks(params, seed, analysis.METHOD, [0.0, cfg.pie_sparsity], classes,
                                       len(test_labels))
        dense.append(d)
        sparse.append(s)
    # Imported published predictions come without models (meta.json says "imported").
    model = None if "imported" in meta else load_checkpoint(out.model_file(params.seeds[0]))[0]

    efficiency_rows = cost_accuracy.read_efficiency({s: out.efficiency_file(s) for s in params.seeds})
    resamples = uncertainty.load(out.ap_resamples)  # None when evaluate ran without intervals

    trade = analysis.tradeoffs(cfg, classes, per_class, evaluation, efficiency_rows)
    result = analysis.analyze(cfg, classes, per_class, evaluation, train_labels, test_labels, dense, sparse,
                              truth, model, resamples)
    result.summary.update(trade.summary)  # operating_points, operating_point_rule
    analysis.write_tradeoffs(trade, out)
    analysis.write_outputs(result, out, map_curve, cfg)  # summary.json last: it lists the operating points
    store.log_summary_run(params, "analyze", "analysis", result.summary,
                         {**store.flatten("analyze", to_dict(params)["analyze"]), "seeds": params.seeds,
                          "data.name": params.data.name},
                         artifacts=[(out.figures, "figures"), (out.efficiency, "tables"),
                                    (out.class_loss_tests, "tables")])
    print(analysis.report_line(result))
    print(analysis.tradeoff_line(trade))
