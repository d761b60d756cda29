"""The analyze stage's results, assembled from its inputs: forgettability (analysis 2), FCD
(analysis 3), PIEs (analysis 4) and weight magnitudes (analysis 6), the ``summary.json``
document and the tables and figures that go with it.

:func:`analyze` computes everything from in-memory inputs (tests call it directly);
:func:`write_outputs` writes the tables and figures where :class:`~cxrprune.core.layout.Layout`
says. The stage only reads the inputs, calls these two and logs the summary to MLflow.
:func:`tradeoffs` / :func:`write_tradeoffs` do the same for the operating points of every
compression method and their measured efficiency (``summary.json`` keys ``operating_points``
and ``operating_point_rule``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrprune.analysis import (
    chance_corrected,
    cost_accuracy,
    fcd,
    figures,
    forgetting,
    operating_points,
    pie_enrichment,
    pies,
    uncertainty,
    weights,
)
from cxrprune.core.atomic import json_clean, write_csv, write_json
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.config import AnalyzeConfig
from cxrprune.core.errors import DataError
from cxrprune.core.layout import Layout, producer

# The analyses use magnitude pruning, the dense reference's method; random is only the mAP control.
METHOD = DENSE_REFERENCE.method
DAP_SPARSITY = 0.95


@dataclass
class Analysis:
    summary: dict[str, Any]
    curves: pd.DataFrame  # median relative change in AP, sparsity x class
    counts: pd.Series  # training positives per class
    forget_table: pd.DataFrame  # per class: train count, first drop, dAP@95, chance-corrected retained AP
    first_drop: forgetting.Correlation
    dap95: forgetting.Correlation
    pairs: pd.DataFrame  # FCD per class pair
    fcd_tests: fcd.FcdTests
    pie_rows: pd.DataFrame  # every test image: spearman, is_pie (+ truth)
    class_ratios: pd.DataFrame  # per class: prevalence among PIEs and non-PIEs, ratio, smoothed enrichment
    bin_ratios: pd.DataFrame
    histogram: pd.DataFrame
    weight_summary: dict[str, Any]
    curve_bands: pd.DataFrame | None = None  # bootstrap: sparsity, class_name, rel_dap_lo, rel_dap_hi
    class_ratio_bands: pd.DataFrame | None = None  # bootstrap: class_name, ratio_lo, ratio_hi


def analyze(cfg: AnalyzeConfig, classes: list[str], per_class: pd.DataFrame, evaluation: dict,
            train_labels: pd.DataFrame, test_labels: pd.DataFrame, dense: list[pd.DataFrame],
            sparse: list[pd.DataFrame], truth: pd.DataFrame | None, model: Any | None,
            resamples: uncertainty.APResamples | None = None) -> Analysis:
    """Every analysis of the study. ``dense``/``sparse`` are the seeds' L1 prediction blocks
    at k = 0 and k = ``cfg.pie_sparsity``; ``truth`` is the synthetic ground truth (or
    None); ``model`` is the first seed's dense model (None for imported predictions, which
    come without models: the weight histogram is then empty, not invented). ``resamples``, the
    evaluate stage's bootstrap resamples, adds a ``<key>_ci`` = [lo, hi] next to each
    correlation and PIE ratio, and the curve and class-ratio bands."""
    # Analysis 2: forgettability curves and their relation to training frequency.
    counts = forgetting.train_counts(train_labels, classes)
    curves = forgetting.forgettability_curves(forgetting.relative_change(per_class, METHOD), classes)
    drop = forgetting.first_drop(curves, cfg.drop_threshold)
    dap = forgetting.dap_at(curves, DAP_SPARSITY)
    if dap.isna().all():
        print(f"analyze: sparsity {DAP_SPARSITY} is not among prune.levels; dap95 is reported as null",
              file=sys.stderr)
    c_drop = forgetting.correlate_with_frequency(drop, counts)
    c_dap = forgetting.correlate_with_frequency(dap, counts)
    # The same against each class's chance level: at 95% the model is at chance and the
    # paper's dAP@95 measures where a class started (analysis/chance_corrected.py).
    cc = chance_corrected.analyse(per_class, test_labels, counts, classes, dap, cfg.drop_threshold, DAP_SPARSITY,
                                  METHOD)
    with np.errstate(divide="ignore"):
        ln_counts = np.where(counts > 0, np.log(np.maximum(counts.to_numpy(np.float64), 1)), np.nan)
    forget_table = pd.DataFrame({"class_name": classes, "train_count": counts.to_numpy(),
                                 "ln_train_count": ln_counts, "first_drop": drop.to_numpy(),
                                 "dap95": dap.to_numpy(), "test_prevalence": cc.chance.to_numpy(),
                                 **{k: cc.auroc[k].to_numpy() for k in cc.auroc.columns},
                                 "retained_95": cc.ap.at.to_numpy(), "retained_auroc_95": cc.roc.at.to_numpy(),
                                 "first_drop_chance_corrected": cc.ap.first_drop.to_numpy(),
                                 "first_drop_auroc": cc.roc.first_drop.to_numpy(),
                                 "excluded_reason": [cc.excluded.get(c, "") for c in classes]})

    # Analysis 3: FCD of every class pair against test-label frequency and co-occurrence.
    pairs = fcd.fcd_pairs(curves, test_labels, classes, cfg.fcd_distance, cfg.fcd_weighting)
    c_fcd = fcd.fcd_correlations(pairs)  # Mantel p-values: the pairs share classes
    # The same on chance-corrected curves (retained AUROC, learned classes only): every class's
    # relative-AP curve ends at prevalence / AP_0 - 1 once the model is at chance, so the
    # paper's FCD measures frequency gaps even when nothing is planted (the planted-effect
    # validation, benchmarks/results/verdicts.txt); retained AUROC ends at -1 for every class.
    pairs_cc = fcd.fcd_pairs(cc.roc.curves[cc.included], test_labels, cc.included, cfg.fcd_distance,
                             cfg.fcd_weighting)
    c_fcd_cc = fcd.fcd_correlations(pairs_cc)
    # How far those distances follow the curves' seed-to-seed scatter (a descriptive rho in the
    # findings report): the per-seed retained AUROC that cc.roc.curves is the median of, over the
    # classes the Mantel tests kept (a class without noise leaves its pairs out of noise_rho).
    rel_roc = forgetting.relative_change(per_class, METHOD,
                                         pd.Series(chance_corrected.AUROC_CHANCE, index=classes), "auroc")
    noise_cc = fcd.curve_noise(rel_roc, list(c_fcd_cc.classes))

    # Analysis 4: PIEs of the seeds' ensemble at pie_sparsity.
    ids, p_dense = pies.ensemble(dense, classes)
    ids_sparse, p_sparse = pies.ensemble(sparse, classes)
    if not np.array_equal(ids, ids_sparse):
        raise DataError("predictions at k=0 and at the PIE sparsity list different test images; rerun prune")
    corr = pies.rowwise_spearman(p_dense, p_sparse)
    is_pie = pies.select_pies(corr, cfg.pie_fraction)
    test_rows = aligned_rows(test_labels, ids)
    y_test = test_rows[classes].to_numpy(dtype=np.int64)
    # Images of one patient share anatomy and labels: the enrichment test permutes within patients.
    patients = test_rows["patient_id"].astype(str).to_numpy() if "patient_id" in test_rows.columns else None
    class_ratios = pies.class_prevalence_ratios(y_test, is_pie, classes)
    # PIEs enriched for rare classes: smoothed enrichment over every class, flag-permutation p.
    enrichment, per_class_enrichment = pie_enrichment.rare_class_enrichment(is_pie, y_test, counts.to_numpy(),
                                                                            patients, classes)
    class_ratios["enrichment"] = per_class_enrichment
    n_findings = pies.findings_counts(y_test, classes)
    bin_ratios = pies.findings_bin_ratios(n_findings, is_pie)
    truth_test = pies.align_truth(truth, ids) if truth is not None else None
    pie_rows = pies.pie_table(ids, corr, is_pie, truth_test)

    # Analysis 6: weight magnitudes of the first seed's dense model.
    if model is None:
        hist = pd.DataFrame({"abs_weight": [], "count": [], "bin_left": [], "bin_right": []})
        w_summary: dict[str, Any] = {}
    else:
        mags = weights.weight_magnitudes(model)
        hist = weights.magnitude_histogram(mags, cfg.histogram_bins)
        w_summary = weights.magnitude_summary(mags)

    pie_summary: dict[str, Any] = {
        "count": int(is_pie.sum()),
        "n_images": int(len(ids)),
        "median_spearman": float(np.median(corr)) if len(corr) else math.nan,
        "max_spearman_pie": float(corr[is_pie].max()) if is_pie.any() else math.nan,
        "ratio_3plus_findings": pies.ratio_at_least(n_findings, is_pie, 3),
        "ratio_3plus_p": pies.enrichment_p(n_findings >= 3, is_pie),
    }
    if truth_test is not None:
        pie_summary.update(pies.truth_comparison(truth_test, is_pie))
        pie_summary["quality_difference"] = pie_summary["mean_quality_pie"] - pie_summary["mean_quality_nonpie"]
    pie_summary.update(enrichment)
    summary = {
        **{k: evaluation.get(k) for k in ("map_dense", "map_at_50", "map_at_90", "map_at_95",
                                          "max_safe_sparsity")},
        "forgettability": {
            "first_drop_r": c_drop.r, "first_drop_p": c_drop.p_r,
            "first_drop_rho": c_drop.rho, "first_drop_rho_p": c_drop.p_rho,
            "first_drop_n": c_drop.n, "first_drop_not_reached": int(drop.isna().sum()),
            "dap95_r": c_dap.r, "dap95_p": c_dap.p_r, "dap95_rho": c_dap.rho, "dap95_rho_p": c_dap.p_rho,
            "dap95_n": c_dap.n,
            **chance_corrected.summary_keys(cc),
            "excluded_classes": chance_corrected.excluded_classes(
                cc, {"first_drop": c_drop, "dap95": c_dap}, counts, cfg.drop_threshold, classes),
        },
        "fcd": {
            **fcd_keys(c_fcd),
            "n_pairs": int(len(pairs)), "n_pairs_used": c_fcd.freq.n,
            "n_classes_used": len(c_fcd.classes), "classes_excluded": list(c_fcd.excluded),
            **{f"auroc_{k}": v for k, v in fcd_keys(c_fcd_cc).items()},
            "auroc_n_classes_used": len(c_fcd_cc.classes),
            "auroc_noise_rho": fcd.noise_rho(pairs_cc, noise_cc),
            "auroc_classes_excluded": [{"class": c, "reason": cc.excluded[c]} for c in classes if c in cc.excluded]
            + [{"class": c, "reason": "a pair value undefined (Mantel needs every pair)"} for c in c_fcd_cc.excluded],
        },
        "pie": pie_summary,
        "weights": w_summary,
    }
    summary.update({f"{k}_ci": evaluation[f"{k}_ci"] for k in ("map_dense", "map_at_50", "map_at_90", "map_at_95")
                    if f"{k}_ci" in evaluation})
    bands = class_bands = None
    if resamples is not None:
        ci, bands, class_bands = uncertainty.analysis_intervals(
            resamples, counts, test_labels, classes, ids, _pie_sets(resamples, dense, sparse, classes, is_pie, cfg),
            n_findings, truth_test, cfg.drop_threshold,
            DAP_SPARSITY, cfg.fcd_distance, cfg.fcd_weighting)
        for section, values in ci.items():
            summary[section].update(values)
        summary["forgettability"].update(uncertainty.chance_corrected_intervals(
            resamples, counts, test_labels, cc.included, cfg.drop_threshold, DAP_SPARSITY))
        summary["bootstrap"] = uncertainty.describe(resamples)
    return Analysis(json_clean(summary), curves, counts, forget_table, c_drop, c_dap, pairs, c_fcd, pie_rows,
                    class_ratios, bin_ratios, hist, w_summary, bands, class_bands)


def _pie_sets(resamples: uncertainty.APResamples, dense: list[pd.DataFrame], sparse: list[pd.DataFrame],
              classes: list[str], is_pie: np.ndarray, cfg: AnalyzeConfig) -> np.ndarray:
    """The PIE set of every resample, redrawn from its resampled seeds (N, B); the run's own
    set (N,) when too few seeds are resampled. The seeds are the evaluate stage's, in order."""
    draws = resamples.seed_draws()
    if draws is None:
        return is_pie
    if len(dense) != len(resamples.seeds):
        raise DataError(f"the bootstrap resamples hold {len(resamples.seeds)} seeds, the predictions "
                        f"{len(dense)}; rerun `dvc repro {producer('evaluation')}`")
    stack = [np.stack([t[classes].to_numpy(dtype=np.float64) for t in tables]) for tables in (dense, sparse)]
    return pies.selection_resamples(stack[0], stack[1], draws, cfg.pie_fraction)


def fcd_keys(t: fcd.FcdTests) -> dict[str, Any]:
    """The correlation keys of summary.json's ``fcd`` section for one set of FCD tests."""
    return {"freq_r": t.freq.r, "freq_p": t.freq.p_r, "freq_rho": t.freq.rho, "freq_rho_p": t.freq.p_rho,
            "iou_r": t.iou.r, "iou_p": t.iou.p_r, "iou_rho": t.iou.rho, "iou_rho_p": t.iou.p_rho,
            "freq_given_iou_rho": t.freq_given_iou_rho, "freq_given_iou_rho_p": t.freq_given_iou_p,
            "p_method": t.p_method}


def aligned_rows(labels: pd.DataFrame, image_ids: np.ndarray) -> pd.DataFrame:
    """Rows of the test labels in the order of the prediction rows (matched by image id)."""
    indexed = labels.assign(image_id=labels["image_id"].astype(str)).set_index("image_id")
    missing = [i for i in image_ids if i not in indexed.index]
    if missing:
        raise DataError(f"predictions list test images absent from the prepared labels {missing[:3]}; "
                        f"rerun prune after prepare")
    return indexed.loc[list(image_ids)]


def write_outputs(a: Analysis, out: Layout, map_curve: pd.DataFrame, cfg: AnalyzeConfig) -> None:
    """The analyze stage's DVC outputs (each atomic): summary, tables, plot tables, figures."""
    write_json(out.summary, a.summary)
    write_csv(out.pies, a.pie_rows)
    write_csv(out.forgettability, a.forget_table)
    long = forgetting.long_curves(a.curves)
    if a.curve_bands is not None:  # bootstrap bands beside each point (dvc plots reads rel_dap)
        long = long.merge(a.curve_bands.assign(level=forgetting.round_levels(a.curve_bands["level"])),
                          on=["level", "class_name"], how="left", validate="1:1")
    write_csv(out.forgettability_curves_table, long)
    write_csv(out.forgetting_vs_frequency_table,
              a.forget_table[["class_name", "ln_train_count", "first_drop", "dap95"]])
    write_csv(out.fcd_pairs_table, a.pairs.assign(pair=a.pairs["class_a"] + " | " + a.pairs["class_b"])[
        ["class_a", "class_b", "pair", "fcd", "abs_dlnf", "iou_quarter"]])
    ratios = a.class_ratios[["class_name", "ratio", "enrichment"]]
    if a.class_ratio_bands is not None:
        ratios = ratios.merge(a.class_ratio_bands, on="class_name", how="left", validate="1:1")
    write_csv(out.pie_class_ratios_table, ratios)
    write_csv(out.pie_findings_ratios_table, a.bin_ratios[["findings", "ratio"]])
    write_csv(out.weight_histogram_table, a.histogram[["abs_weight", "count"]])

    fig_dir = out.figures
    figures.map_vs_sparsity(map_curve, fig_dir / "map_vs_sparsity.png")
    figures.forgettability_curves(a.curves, a.counts, fig_dir / "forgettability_curves.png", cfg.drop_threshold,
                                  bands=a.curve_bands)
    figures.forgetting_vs_frequency(a.forget_table, a.first_drop, a.dap95, fig_dir / "forgetting_vs_frequency.png",
                                    cfg.drop_threshold, DAP_SPARSITY)
    figures.fcd_scatter(a.pairs, {"freq": a.fcd_tests.freq, "iou": a.fcd_tests.iou}, fig_dir / "fcd.png",
                        cfg.fcd_distance, p_name="Mantel p")
    figures.pie_ratios(a.class_ratios, a.bin_ratios, fig_dir / "pie_ratios.png")
    figures.weight_histogram(a.histogram, fig_dir / "weight_histogram.png", a.weight_summary)


def report_line(a: Analysis) -> str:
    """One line for the terminal running ``dvc repro``."""
    f, p, c = a.summary["forgettability"], a.summary["pie"], a.summary["fcd"]

    def show(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    return (f"analyze: first drop vs ln(train count) r={show(f['first_drop_r'])} rho={show(f['first_drop_rho'])} "
            f"(n={f['first_drop_n']}, not reached: {', '.join(a.first_drop.excluded) or 'none'}); "
            f"dAP@95 r={show(f['dap95_r'])} rho={show(f['dap95_rho'])}; "
            f"FCD vs |d ln f| rho={show(c['freq_rho'])}, vs IoU^1/4 rho={show(c['iou_rho'])}; "
            f"{p['count']} PIEs, 3+ findings ratio {show(p['ratio_3plus_findings'])}")


@dataclass
class Tradeoffs:
    """Operating points of every method and what they cost (:mod:`.operating_points`, :mod:`.cost_accuracy`)."""

    summary: dict[str, Any]  # summary.json keys operating_points, operating_point_rule
    class_tests: pd.DataFrame  # per (method, level, class): non-inferiority and the paper-style loss test
    efficiency: pd.DataFrame  # every seed's efficiency rows joined with that model's accuracy
    pareto: pd.DataFrame  # one point per (method, level) and the dense model


def tradeoffs(cfg: AnalyzeConfig, classes: list[str], per_class: pd.DataFrame, evaluation: dict,
              efficiency_rows: pd.DataFrame) -> Tradeoffs:
    """The operating point (every class non-inferior at margin ``cfg.class_tolerance``, the
    evaluate stage's alpha) and beside it the paper-style rules: (a) comes from the evaluate
    stage (``evaluation["methods"]``), (b) is tested here with the evaluate stage's test,
    correction and alpha and ``cfg.class_tolerance``; ``efficiency_rows`` is
    :func:`cxrprune.analysis.cost_accuracy.read_efficiency`'s table."""
    methods = evaluation.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise DataError("evaluate.json has no per-method paired tests ('methods'); "
                        f"rerun `dvc repro {producer('evaluation')}`")
    cost_accuracy.check_blocks(efficiency_rows, {m: e["levels"] for m, e in methods.items()})
    rel = operating_points.relative_to_dense(per_class)
    alpha = float(evaluation["alpha"])
    class_tests = operating_points.class_loss_tests(rel, cfg.class_tolerance, evaluation["test"],
                                                    evaluation["correction"], alpha)
    ni = operating_points.class_noninferiority(rel, cfg.class_tolerance, alpha)
    joined = cost_accuracy.join_accuracy(efficiency_rows, per_class)
    pareto = cost_accuracy.pareto_table(per_class, joined)
    points = operating_points.operating_points(methods, class_tests, pareto, ni)
    rule = operating_points.rule(cfg.class_tolerance, evaluation, len(classes), ni)
    return Tradeoffs(json_clean({"operating_points": points, "operating_point_rule": rule}),
                     operating_points.class_table(class_tests, ni), joined, pareto)


def write_tradeoffs(t: Tradeoffs, out: Layout) -> None:
    """The operating-point outputs: per-class tests, efficiency table, Pareto table and figure."""
    write_csv(out.class_loss_tests, t.class_tests)
    write_csv(out.efficiency, t.efficiency)
    write_csv(out.pareto, t.pareto)
    fig_dir = out.figures
    figures.pareto(t.pareto, fig_dir / "pareto.png", t.summary["operating_points"])


def tradeoff_line(t: Tradeoffs) -> str:
    """One line for the terminal: each method's operating point and the paper-style two levels."""
    def show(x: Any) -> str:
        return "none" if x is None else f"{x:g}"

    parts = [f"{m} {show(p['operating_point'])} ({show(p['max_safe_level_map'])}/"
             f"{show(p['max_safe_level_all_classes'])})" for m, p in t.summary["operating_points"].items()]
    return ("analyze: operating point, every class shown non-inferior (paper-style: not significantly worse on "
            f"average / for every class), tolerance {t.summary['operating_point_rule']['class_tolerance']:g}: "
            + ", ".join(parts))
