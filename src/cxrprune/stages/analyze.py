"""DVC stage ``analyze``: forgettability, FCD, PIEs, weight magnitudes, summary and figures.

Reads the evaluate stage's tables, the prepared labels, the L1 predictions at k = 0 and
k = ``analyze.pie_sparsity`` of every seed, and the first seed's checkpoint. Writes the
summary metrics (``metrics/<name>/summary.json``, the file ``dvc exp show`` reads), the
per-image PIE table, the per-class forgettability table, long CSVs for ``dvc plots`` and
PNG figures, all atomically; then logs the summary and the figures to one MLflow run
("analysis"), after the DVC outputs exist so a tracking failure loses no results.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .. import fcd, figures, forgetting, pies, tracking, weights
from ..atomic import write_csv, write_json
from ..config import Params, to_dict
from ..errors import DataError
from ..models import load_checkpoint
from ..prepare import load_meta, load_split
from .prune import predictions_path
from .train import model_dir

METHOD = "l1"  # the analyses use magnitude pruning; random is only the mAP control
DAP_SPARSITY = 0.95
FIGURES = ("map_vs_sparsity.png", "forgettability_curves.png", "forgetting_vs_frequency.png", "fcd.png",
           "pie_ratios.png", "weight_histogram.png")


def metrics_dir(params: Params) -> Path:
    return Path("metrics") / params.data.name


def plots_dir(params: Params) -> Path:
    return Path("plots") / params.data.name


def run(params: Params) -> None:
    cfg = params.analyze
    mdir, pdir = metrics_dir(params), plots_dir(params)
    fig_dir = pdir / "figures"
    prepared = params.data.prepared_dir

    meta = load_meta(prepared)
    classes: list[str] = list(meta["classes"])
    per_class = _read_csv(mdir / "per_class.csv", "evaluate")
    evaluation = _read_json(mdir / "evaluate.json", "evaluate")
    map_curve = _read_csv(pdir / "map_vs_sparsity.csv", "evaluate")
    train_labels, _ = load_split(prepared, "train")
    test_labels, _ = load_split(prepared, "test")
    truth_path = Path(prepared) / "truth.parquet"
    truth = _read_truth(truth_path) if truth_path.exists() else None  # synthetic data only

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
    with np.errstate(divide="ignore"):
        ln_counts = np.where(counts > 0, np.log(np.maximum(counts.to_numpy(np.float64), 1)), np.nan)
    forget_table = pd.DataFrame({"class_name": classes, "train_count": counts.to_numpy(),
                                 "ln_train_count": ln_counts, "first_drop": drop.to_numpy(),
                                 "dap95": dap.to_numpy()})

    # Analysis 3: FCD of every class pair against test-label frequency and co-occurrence.
    pairs = fcd.fcd_pairs(curves, test_labels, classes, cfg.fcd_distance, cfg.fcd_weighting)
    c_fcd = fcd.fcd_correlations(pairs)

    # Analysis 4: PIEs of the seeds' ensemble at pie_sparsity.
    dense, sparse = _read_predictions(params, classes, len(test_labels))
    ids, p_dense = pies.ensemble(dense, classes)
    ids_sparse, p_sparse = pies.ensemble(sparse, classes)
    if not np.array_equal(ids, ids_sparse):
        raise DataError("predictions at k=0 and at the PIE sparsity list different test images; rerun prune")
    corr = pies.rowwise_spearman(p_dense, p_sparse)
    is_pie = pies.select_pies(corr, cfg.pie_fraction)
    y_test = _aligned_labels(test_labels, ids, classes)
    class_ratios = pies.class_prevalence_ratios(y_test, is_pie, classes)
    n_findings = pies.findings_counts(y_test, classes)
    bin_ratios = pies.findings_bin_ratios(n_findings, is_pie)
    truth_test = pies.align_truth(truth, ids) if truth is not None else None
    pie_rows = pies.pie_table(ids, corr, is_pie, truth_test)

    # Analysis 6: weight magnitudes of the first seed's dense model. Imported published
    # predictions come without models: the histogram is then empty, not invented.
    if "imported" in meta:
        hist = pd.DataFrame({"abs_weight": [], "count": [], "bin_left": [], "bin_right": []})
        w_summary: dict[str, Any] = {}
    else:
        model, _ = load_checkpoint(model_dir(params, params.seeds[0]) / "model.pt")
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
    summary = {
        **{k: evaluation.get(k) for k in ("map_dense", "map_at_50", "map_at_90", "map_at_95",
                                          "max_safe_sparsity")},
        "forgettability": {
            "first_drop_r": c_drop.r, "first_drop_p": c_drop.p_r,
            "first_drop_rho": c_drop.rho, "first_drop_rho_p": c_drop.p_rho,
            "first_drop_n": c_drop.n, "first_drop_not_reached": int(drop.isna().sum()),
            "dap95_r": c_dap.r, "dap95_p": c_dap.p_r, "dap95_rho": c_dap.rho, "dap95_rho_p": c_dap.p_rho,
            "dap95_n": c_dap.n,
        },
        "fcd": {
            "freq_r": c_fcd["freq"].r, "freq_p": c_fcd["freq"].p_r,
            "freq_rho": c_fcd["freq"].rho, "freq_rho_p": c_fcd["freq"].p_rho,
            "iou_r": c_fcd["iou"].r, "iou_p": c_fcd["iou"].p_r,
            "iou_rho": c_fcd["iou"].rho, "iou_rho_p": c_fcd["iou"].p_rho,
            "n_pairs": int(len(pairs)), "n_pairs_used": c_fcd["freq"].n,
        },
        "pie": pie_summary,
        "weights": w_summary,
    }
    summary = _json_clean(summary)

    # DVC outputs.
    write_json(mdir / "summary.json", summary)
    write_csv(mdir / "pies.csv", pie_rows)
    write_csv(mdir / "forgettability.csv", forget_table)
    write_csv(pdir / "forgettability_curves.csv", forgetting.long_curves(curves))
    write_csv(pdir / "forgetting_vs_frequency.csv",
              forget_table[["class_name", "ln_train_count", "first_drop", "dap95"]])
    write_csv(pdir / "fcd_pairs.csv", pairs.assign(pair=pairs["class_a"] + " | " + pairs["class_b"])[
        ["class_a", "class_b", "pair", "fcd", "abs_dlnf", "iou_quarter"]])
    write_csv(pdir / "pie_class_ratios.csv", class_ratios[["class_name", "ratio"]])
    write_csv(pdir / "pie_findings_ratios.csv", bin_ratios[["findings", "ratio"]])
    write_csv(pdir / "weight_histogram.csv", hist[["abs_weight", "count"]])

    figures.map_vs_sparsity(map_curve, fig_dir / "map_vs_sparsity.png")
    figures.forgettability_curves(curves, counts, fig_dir / "forgettability_curves.png", cfg.drop_threshold)
    figures.forgetting_vs_frequency(forget_table, c_drop, c_dap, fig_dir / "forgetting_vs_frequency.png",
                                    cfg.drop_threshold, DAP_SPARSITY)
    figures.fcd_scatter(pairs, c_fcd, fig_dir / "fcd.png", cfg.fcd_distance)
    figures.pie_ratios(class_ratios, bin_ratios, fig_dir / "pie_ratios.png")
    figures.weight_histogram(hist, fig_dir / "weight_histogram.png", w_summary)

    _log_mlflow(params, summary, fig_dir)
    _report(summary, c_drop)


def _read_csv(path: Path, stage: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {stage}` first") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({exc}); rerun `dvc repro {stage} --force`") from None


def _read_json(path: Path, stage: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {stage}` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({exc}); rerun `dvc repro {stage} --force`") from None


def _read_truth(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: damaged ({type(exc).__name__}); rerun `dvc repro prepare --force`") from None


def _check_footer(path: Path, seed: int, n_rows: int, columns: list[str]) -> None:
    """The parquet footer of a prediction table (only some of its rows are read here): its
    row count and column names must fit the contract (evaluate checks every value)."""
    meta = pq.read_metadata(path)
    names = meta.schema.to_arrow_schema().names
    if meta.num_rows != n_rows or names != columns:
        raise DataError(f"{path}: {meta.num_rows} rows and columns {names[:4]}..., expected {n_rows} rows "
                        f"(test images x methods x levels) and {columns[:4]}...; rerun `dvc repro prune@{seed} --force`")


def _read_predictions(params: Params, classes: list[str], n_test: int) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Per seed, the L1 rows at k = 0 and at the PIE sparsity (only those rows are read).

    Levels are matched within a tolerance because they are floats written by another stage.
    """
    k = params.analyze.pie_sparsity
    tol = 1e-9
    filters = [[("method", "=", METHOD), ("sparsity", ">=", lo), ("sparsity", "<=", hi)]
               for lo, hi in ((-tol, tol), (k - tol, k + tol))]
    columns = ["image_id", "method", "sparsity", *classes]
    dense, sparse = [], []
    for seed in params.seeds:
        path = predictions_path(params, seed)
        try:
            table = pq.read_table(path, columns=columns, filters=filters).to_pandas()
        except FileNotFoundError:
            raise DataError(f"{path}: not found; run `dvc repro prune@{seed}` first") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid/KeyError for a bad file or column
            raise DataError(f"{path}: unreadable or lacks columns ({type(exc).__name__}: {exc}); "
                            f"rerun `dvc repro prune@{seed}`") from None
        _check_footer(path, seed, n_rows=len(params.prune.methods) * len(params.prune.levels) * n_test,
                      columns=columns)
        for level, out in ((0.0, dense), (k, sparse)):
            rows = table.loc[np.isclose(table["sparsity"].to_numpy(), level, atol=tol, rtol=0)]
            if rows.empty:
                raise DataError(f"{path}: no {METHOD} predictions at sparsity {level:g}; rerun prune@{seed}")
            out.append(rows.reset_index(drop=True))
    return dense, sparse


def _aligned_labels(labels: pd.DataFrame, image_ids: np.ndarray, classes: list[str]) -> np.ndarray:
    """Test labels in the order of the prediction rows (matched by image id)."""
    indexed = labels.assign(image_id=labels["image_id"].astype(str)).set_index("image_id")
    missing = [i for i in image_ids if i not in indexed.index]
    if missing:
        raise DataError(f"predictions list test images absent from the prepared labels {missing[:3]}; "
                        f"rerun prune after prepare")
    return indexed.loc[list(image_ids), classes].to_numpy(dtype=np.int64)


def _json_clean(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python numbers, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _log_mlflow(params: Params, summary: dict, fig_dir: Path) -> None:
    """One run named "analysis": the summary as dotted metrics, the analyze params, the figures."""
    import mlflow

    experiment_id = tracking.start(params.mlflow)
    numeric = {k: float(v) for k, v in tracking.flatten("", summary).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tags = {**tracking.context_tags(), "cxrprune_stage": "analyze", "dataset": params.data.name}
    with mlflow.start_run(experiment_id=experiment_id, run_name="analysis", tags=tags) as run:
        run_id = run.info.run_id
        tracking.log_params(run_id, {**tracking.flatten("analyze", to_dict(params)["analyze"]),
                                     "seeds": params.seeds, "data.name": params.data.name})
        tracking.log_metrics(run_id, numeric)
        mlflow.log_artifacts(str(fig_dir), artifact_path="figures")


def _report(summary: dict, c_drop: forgetting.Correlation) -> None:
    f, p = summary["forgettability"], summary["pie"]

    def show(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    print(f"analyze: first drop vs ln(train count) r={show(f['first_drop_r'])} rho={show(f['first_drop_rho'])} "
          f"(n={f['first_drop_n']}, not reached: {', '.join(c_drop.excluded) or 'none'}); "
          f"dAP@95 r={show(f['dap95_r'])} rho={show(f['dap95_rho'])}; "
          f"FCD vs |d ln f| rho={show(summary['fcd']['freq_rho'])}, vs IoU^1/4 rho={show(summary['fcd']['iou_rho'])}; "
          f"{p['count']} PIEs, 3+ findings ratio {show(p['ratio_3plus_findings'])}")
