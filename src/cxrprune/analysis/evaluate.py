"""Per-class metrics of the pruned models, mAP against sparsity, and the paired test.

Analysis 1 of the study: mAP (the unweighted mean of per-class AP) at every sparsity ``k``,
summarised by its median over seeds, and a one-sided paired test across seeds of
``mAP(k) < mAP(0)`` for every ``k > 0`` (Wilcoxon signed-rank by default, Holm-corrected
across the levels). ``max_safe_sparsity`` is the largest ``k`` such that no ``k' <= k`` is
significantly worse than the dense model -- the paper's "prune up to 65% with no
significant impact", made testable.

Every other compression method is tested the same way against the same dense model (``l1``
at level 0 of the same seed), across its own levels (:func:`paired_tests_by_method`); a
method's level-0 block that equals the dense model in every seed (any pruning method at 0)
is the dense model itself and is not tested, as ``l1`` at 0 is not.

The stage ``cxrprune.stages.evaluate`` only loads files and writes the tables built here.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.analysis.metrics import metrics_for_blocks
from cxrprune.compression.predictions import BLOCK_KEYS, LEVEL_TOLERANCE
from cxrprune.core.atomic import json_clean
from cxrprune.core.config import EvaluateConfig
from cxrprune.core.errors import DataError
from cxrprune.datasets.prepare import load_meta

PER_CLASS_COLUMNS = ["seed", "method", "sparsity", "class_name", "ap", "auroc", "f1"]
MAP_COLUMNS = ["seed", "method", "sparsity", "map", "mean_auroc"]
CURVE_COLUMNS = ["sparsity", "method", "map", "map_q25", "map_q75"]
PAIRED_COLUMNS = ["sparsity", "n_seeds", "statistic", "p_raw", "p_adj", "significant", "median_map", "drop"]

# Levels reported in evaluate.json as map_at_<percent>.
REPORTED_LEVELS = (0.5, 0.9, 0.95)
# The dense model every method is compared with: l1 at level 0 of the same seed.
REFERENCE = ("l1", 0.0)


# --- loading ----------------------------------------------------------------------------


def load_test_labels(prepared_dir: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """The prepared test labels and the canonical class list (``meta.json`` key ``classes``).

    Only the labels are read, not the image cache: imported predictions come without images.
    """
    prepared_dir = Path(prepared_dir)
    meta_path = prepared_dir / "meta.json"
    labels_path = prepared_dir / "labels_test.parquet"
    classes = load_meta(prepared_dir).get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{meta_path}: 'classes' must be a non-empty list of names, got {classes!r}")
    if not labels_path.is_file():
        raise DataError(f"{labels_path}: not found; run `dvc repro prepare` first")
    try:
        return pd.read_parquet(labels_path), classes
    except (OSError, ValueError) as exc:
        raise DataError(f"{labels_path}: not a readable parquet file ({exc}); rerun `dvc repro prepare`") from None



# --- per-class metrics and mAP ----------------------------------------------------------


def per_class_metrics(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    classes: list[str],
    seed: int,
    f1_threshold: float = 0.5,
    *,
    source: str = "predictions",
    workers: int = 1,
) -> pd.DataFrame:
    """AP, AUROC and F1 of every class for every (method, sparsity) block of one seed.

    ``predictions`` follows the contract of ``data/predictions/<name>/seed-<s>.parquet``
    (``image_id, method, sparsity, <class probabilities>``; each block lists the test
    images in the order of ``labels``). ``source`` names the file in error messages.
    ``workers > 1`` spreads the blocks over threads; the default is 1 because one block
    takes a few milliseconds and threads gained little or lost on a busy 2-core machine
    (``benchmarks/bench_evaluate.py`` measures both).

    Returns columns ``seed, method, sparsity, class_name, ap, auroc, f1``, blocks sorted by
    method then sparsity, classes in the given order.

    Raises :class:`DataError` on a missing column, labels that are not 0/1, a class
    without positive or without negative test labels (AP or AUROC would be undefined), a
    probability outside [0, 1] or non-finite, or a block whose image ids differ from
    the labels'.
    """
    where = f"{source} (seed {seed})"
    _require_columns(predictions, ["image_id", *BLOCK_KEYS, *classes], where)
    y_true = _label_matrix(labels, classes)
    scores = predictions[classes].to_numpy()
    _check_probabilities(scores, predictions, classes, where)
    label_ids = labels["image_id"].astype(str).to_numpy()
    pred_ids = predictions["image_id"].astype(str).to_numpy()
    blocks = _blocks(predictions, where)
    for key, rows in blocks.items():
        _check_image_ids(pred_ids[rows], label_ids, f"{where}, method {key[0]}, sparsity {key[1]:g}")
    results = metrics_for_blocks(y_true, (scores[rows] for rows in blocks.values()),
                                 threshold=f1_threshold, workers=workers)
    n_classes = len(classes)
    return pd.DataFrame({
        "seed": np.full(len(blocks) * n_classes, seed, dtype=np.int64),
        "method": np.repeat([m for m, _ in blocks], n_classes),
        "sparsity": np.repeat(np.array([k for _, k in blocks], dtype=np.float64), n_classes),
        "class_name": np.tile(np.array(classes, dtype=object), len(blocks)),
        "ap": np.concatenate([r.ap for r in results]),
        "auroc": np.concatenate([r.auroc for r in results]),
        "f1": np.concatenate([r.f1 for r in results]),
    }, columns=PER_CLASS_COLUMNS)


def map_table(per_class: pd.DataFrame) -> pd.DataFrame:
    """mAP and mean AUROC per (seed, method, sparsity): plain means over classes.

    No NaN is skipped: an undefined per-class value would silently change the set of
    classes a mAP averages over, so it is an error instead (:func:`per_class_metrics`
    never produces one for a valid test set).
    """
    _require_columns(per_class, PER_CLASS_COLUMNS, "per-class table")
    undefined = per_class[per_class[["ap", "auroc"]].isna().any(axis=1)]
    if len(undefined):
        row = undefined.iloc[0]
        raise DataError(f"per-class table: undefined AP/AUROC for class {row['class_name']!r} "
                        f"(seed {row['seed']}, {row['method']}@{row['sparsity']:g}); mAP would be undefined")
    out = (per_class.groupby(["seed", "method", "sparsity"], sort=True)
           .agg(map=("ap", "mean"), mean_auroc=("auroc", "mean")).reset_index())
    return out[MAP_COLUMNS]


def map_curve(maps: pd.DataFrame) -> pd.DataFrame:
    """Median mAP over seeds per (method, sparsity), with the 25th and 75th percentiles."""
    g = maps.groupby(["method", "sparsity"], sort=True)["map"]
    out = pd.DataFrame({"map": g.median(), "map_q25": g.quantile(0.25), "map_q75": g.quantile(0.75)})
    return out.reset_index()[CURVE_COLUMNS]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(map(repr, missing))}")


def _label_matrix(labels: pd.DataFrame, classes: list[str]) -> np.ndarray:
    _require_columns(labels, ["image_id", *classes], "test labels")
    y = labels[classes].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise DataError("test labels: class columns must hold only 0 and 1; rerun `dvc repro prepare`")
    y = y.astype(bool)
    for name, n_pos in zip(classes, y.sum(axis=0)):
        if n_pos == 0 or n_pos == len(y):
            kind = "positive" if n_pos == 0 else "negative"
            raise DataError(f"test labels: class {name!r} has no {kind} image, so its "
                            f"{'AP' if n_pos == 0 else 'AUROC'} is undefined; use a test split with both")
    return y


def _check_probabilities(scores: np.ndarray, predictions: pd.DataFrame, classes: list[str], where: str) -> None:
    if not np.issubdtype(scores.dtype, np.number):
        raise DataError(f"{where}: class columns must be numeric probabilities, got dtype {scores.dtype}")
    with np.errstate(invalid="ignore"):
        bad = ~((scores >= 0) & (scores <= 1))  # NaN fails both comparisons
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        r = predictions.iloc[row]
        raise DataError(f"{where}: probability {scores[row, col].item()!r} for class {classes[col]!r} of image "
                        f"{r['image_id']} ({r['method']}@{r['sparsity']:g}) is not a finite number in [0, 1]")


def _blocks(predictions: pd.DataFrame, where: str) -> dict[tuple[str, float], np.ndarray]:
    sparsity = predictions["sparsity"]
    if not pd.api.types.is_numeric_dtype(sparsity) or not np.isfinite(sparsity.to_numpy(dtype=float)).all():
        raise DataError(f"{where}: column 'sparsity' must hold finite numbers")
    if predictions["method"].isna().any():
        raise DataError(f"{where}: column 'method' has missing values")
    groups = predictions.groupby(BLOCK_KEYS, sort=True).indices
    return {(str(m), float(k)): np.asarray(rows) for (m, k), rows in groups.items()}


def _check_image_ids(got: np.ndarray, expected: np.ndarray, where: str) -> None:
    if len(got) != len(expected):
        raise DataError(f"{where}: {len(got)} rows but the test set has {len(expected)} images; "
                        "rerun `dvc repro prune` after `dvc repro prepare`")
    differ = got != expected
    if differ.any():
        i = int(np.argmax(differ))
        raise DataError(f"{where}: image ids differ from the test labels' order first at row {i} "
                        f"(got {got[i]!r}, expected {expected[i]!r}); rerun `dvc repro prune`")


# --- paired test ------------------------------------------------------------------------


class PairedTestResult(NamedTuple):
    """Outcome of :func:`paired_test`.

    ``table`` has one row per ``k > 0``: ``sparsity, n_seeds, statistic, p_raw, p_adj,
    significant, median_map, drop`` (``drop`` is the median over seeds of
    ``mAP(0) - mAP(k)``, positive when pruning hurts). ``min_attainable_p`` is the smallest
    one-sided p-value the test can give with ``n_seeds`` seeds (``None`` for the t-test,
    whose p-value has no floor). ``note`` explains a null result or a test that cannot
    reach significance; ``None`` when there is nothing to say.
    """

    table: pd.DataFrame
    max_safe_sparsity: float | None
    min_attainable_p: float | None
    n_seeds: int
    note: str | None


def paired_test(
    maps: pd.DataFrame,
    method: str = "l1",
    test: str = "wilcoxon",
    correction: str = "holm",
    alpha: float = 0.05,
) -> PairedTestResult:
    """One-sided paired test across seeds of ``mAP(method, k) < mAP(dense)`` for every level
    ``k`` of ``method``; the dense model is ``l1`` at 0 (:data:`REFERENCE`).

    ``maps`` is a :func:`map_table`. ``test`` is ``wilcoxon`` (:func:`scipy.stats.wilcoxon`,
    zero differences dropped, exact or permutation null for small samples) or ``ttest``
    (:func:`scipy.stats.ttest_rel`); ``correction`` is ``holm`` (step-down, across the
    method's tested levels) or ``none``. A level whose mAP equals the dense one at every seed
    has p = 1: there is no evidence of a drop (scipy would warn and give NaN or raise).
    Level 0 of ``l1`` is the dense model; level 0 of another method is tested unless it
    equals the dense model at every seed (a pruning method at 0), so a single-level method
    such as ``int8`` (level 0 only) is tested at its one level.

    ``max_safe_sparsity`` is the largest level before the first significant one (an untested
    level is safe); ``None`` when the method's lowest level is already significantly worse,
    or with fewer than two seeds (no paired test is possible: the p-values are null and
    ``note`` says why).
    """
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"test must be 'wilcoxon' or 'ttest', got {test!r}")
    if correction not in ("holm", "none"):
        raise ValueError(f"correction must be 'holm' or 'none', got {correction!r}")
    reference = _map_by_seed(maps, REFERENCE[0], need_dense=True)
    wide = reference if method == REFERENCE[0] else _map_by_seed(maps, method, need_dense=False)
    if list(wide.index) != list(reference.index):
        raise DataError(f"mAP table: method {method!r} has seeds {list(wide.index)} but the dense model "
                        f"({REFERENCE[0]}@0) has {list(reference.index)}, so the test cannot pair seeds")
    dense = reference[REFERENCE[1]].to_numpy()
    all_levels = [float(k) for k in wide.columns]
    levels = [k for k in all_levels
              if k > 0 or (method != REFERENCE[0] and not np.array_equal(wide[k].to_numpy(), dense))]
    n_seeds = len(wide)
    min_p = min_attainable_p(test, n_seeds)
    medians = [float(np.median(wide[k])) for k in levels]
    drops = [float(np.median(dense - wide[k].to_numpy())) for k in levels]
    if n_seeds < 2:
        nan = [math.nan] * len(levels)
        table = _paired_table(levels, n_seeds, nan, nan, nan, [False] * len(levels), medians, drops)
        note = (f"only {n_seeds} seed: a paired test across seeds needs at least 2, "
                "so p-values and max_safe_sparsity are null")
        return PairedTestResult(table, None, min_p, n_seeds, note)
    tested = [one_sided_test(wide[k].to_numpy(), dense, test) for k in levels]
    p_raw = np.array([p for _, p in tested], dtype=np.float64)
    p_adj = (holm(p_raw) if correction == "holm" else p_raw) if levels else p_raw
    significant = p_adj <= alpha
    table = _paired_table(levels, n_seeds, [s for s, _ in tested], p_raw, p_adj, significant, medians, drops)
    note = _power_note(test, min_p, n_seeds, len(levels), alpha, correction)
    unsafe = dict(zip(levels, significant))
    return PairedTestResult(table, max_safe_level(all_levels, [bool(unsafe.get(k, False)) for k in all_levels]),
                            min_p, n_seeds, note)


def paired_tests_by_method(maps: pd.DataFrame, method_levels: dict[str, list[float]], test: str = "wilcoxon",
                           correction: str = "holm", alpha: float = 0.05) -> dict[str, PairedTestResult]:
    """:func:`paired_test` of every method, each against the dense model; ``method_levels``
    maps each configured method to the levels it produced
    (:func:`cxrprune.compression.methods.method_levels`), checked against ``maps`` so a stale
    table is an error rather than a silently shorter curve."""
    _require_columns(maps, ["seed", "method", "sparsity", "map"], "mAP table")
    out = {}
    for method, expected in method_levels.items():
        got = np.sort(maps.loc[maps["method"] == method, "sparsity"].unique())
        want = np.sort(np.asarray(expected, dtype=np.float64))
        if len(got) != len(want) or not np.allclose(got, want, rtol=0, atol=LEVEL_TOLERANCE):
            raise DataError(f"mAP table: method {method!r} has levels {[float(k) for k in got]}, expected "
                            f"{[float(k) for k in want]}; rerun `dvc repro prune` and `dvc repro evaluate`")
        out[method] = paired_test(maps, method, test, correction, alpha)
    return out


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control), in the input order.

    With the p-values sorted ascending, ``p_adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``;
    rejecting ``p_adj <= alpha`` is Holm's procedure. (SciPy has no Holm correction;
    ``scipy.stats.false_discovery_control`` is Benjamini-Hochberg.)
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError(f"holm needs a 1-D array of p-values in [0, 1], got {p!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted


def max_safe_sparsity(levels: Sequence[float], significant: Sequence[bool]) -> float:
    """The largest level ``k`` such that no level ``0 < k' <= k`` is significant.

    Scanning upwards, the first significant level stops the scan: a drop at 0.3 caps the
    answer at 0.25 even if 0.35 is not significant. 0.0 when the first level is
    significant; the largest level when none is.
    """
    safe = 0.0
    for k, sig in sorted(zip(levels, significant)):
        if sig:
            break
        safe = float(k)
    return safe


def max_safe_level(levels: Sequence[float], unsafe: Sequence[bool]) -> float | None:
    """The largest level before the first unsafe one, scanning upwards; ``None`` when the
    lowest level is already unsafe. Unlike :func:`max_safe_sparsity` the lowest level is
    judged too: a method's level 0 (``int8``, ``fp16``) need not be the dense model."""
    safe = None
    for k, bad in sorted(zip(levels, unsafe)):
        if bad:
            break
        safe = float(k)
    return safe


def min_attainable_p(test: str, n_seeds: int) -> float | None:
    """Smallest one-sided p-value of ``test`` with ``n_seeds`` pairs.

    Wilcoxon: ``1 / 2**n``, every difference negative (exact null, no ties or zeros).
    The t-test's p-value can be arbitrarily small, so ``None``.
    """
    if test == "wilcoxon" and n_seeds >= 1:
        return 0.5 ** n_seeds
    return None


def _map_by_seed(maps: pd.DataFrame, method: str, need_dense: bool = True) -> pd.DataFrame:
    _require_columns(maps, ["seed", "method", "sparsity", "map"], "mAP table")
    rows = maps[maps["method"] == method]
    if rows.empty:
        raise DataError(f"mAP table: no rows for method {method!r}")
    if rows.duplicated(["seed", "sparsity"]).any():
        raise DataError(f"mAP table: duplicate (seed, sparsity) rows for method {method!r}")
    wide = rows.pivot(index="seed", columns="sparsity", values="map").sort_index(axis=1)
    if need_dense and 0.0 not in wide.columns:
        raise DataError(f"mAP table: method {method!r} has no dense level (sparsity 0)")
    if wide.isna().any().any():
        seed, k = wide.isna().stack().idxmax()
        raise DataError(f"mAP table: seed {seed} has no mAP for {method}@{k:g}, so the test cannot pair seeds")
    return wide


def one_sided_test(sparse: np.ndarray, dense: np.ndarray, test: str) -> tuple[float, float]:
    """(statistic, p) of the paired one-sided ``sparse < dense`` (``wilcoxon`` or ``ttest``);
    scipy's statistic (Wilcoxon: the rank sum of the positive differences; t-test: t).
    Identical samples give p = 1 (no evidence of a drop)."""
    if np.array_equal(sparse, dense):
        return 0.0, 1.0
    with warnings.catch_warnings():
        # A near-constant difference makes ttest_rel warn about precision loss; its
        # +-inf statistic and 0/1 p-value are the right limits, so the warning is noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "wilcoxon":
            res = stats.wilcoxon(sparse, dense, alternative="less")
        else:
            res = stats.ttest_rel(sparse, dense, alternative="less")
    p = float(res.pvalue)
    return float(res.statistic), (1.0 if math.isnan(p) else p)


def _paired_table(levels, n_seeds, statistic, p_raw, p_adj, significant, medians, drops) -> pd.DataFrame:
    return pd.DataFrame({
        "sparsity": np.asarray(levels, dtype=np.float64),
        "n_seeds": n_seeds,
        "statistic": np.asarray(statistic, dtype=np.float64),
        "p_raw": np.asarray(p_raw, dtype=np.float64),
        "p_adj": np.asarray(p_adj, dtype=np.float64),
        "significant": np.asarray(significant, dtype=bool),
        "median_map": medians,
        "drop": drops,
    }, columns=PAIRED_COLUMNS)


def _power_note(test: str, min_p: float | None, n_seeds: int, n_levels: int,
                alpha: float, correction: str) -> str | None:
    """Say so when no level can ever be significant, which makes max_safe_sparsity the
    largest level by construction rather than by evidence."""
    if min_p is None or n_levels == 0:
        return None
    first_threshold = alpha / n_levels if correction == "holm" else alpha
    if min_p <= first_threshold:
        return None
    needed = math.ceil(math.log2(1 / first_threshold))
    how = f"Holm over {n_levels} levels needs p <= {alpha:g}/{n_levels} = {first_threshold:.4g}" \
        if correction == "holm" else f"it needs p <= alpha = {alpha:g}"
    return (f"with {n_seeds} seeds the smallest one-sided {test} p-value is 1/2^{n_seeds} = {min_p:.4g}, "
            f"but {how}: no level can be significant, so max_safe_sparsity is the largest level "
            f"by construction, not by evidence; use at least {needed} seeds")


# --- summary ----------------------------------------------------------------------------


def summarize(maps: pd.DataFrame, result: PairedTestResult, config: EvaluateConfig,
              by_method: dict[str, PairedTestResult] | None = None) -> dict[str, Any]:
    """The content of ``metrics/<name>/evaluate.json``: JSON-safe, NaN written as null.

    ``map_dense`` and ``map_at_<50|90|95>`` are L1 medians over seeds (null when that level
    was not evaluated); ``random_map_at_*`` likewise for random pruning when it is present.
    ``paired_tests`` lists the per-level test table of L1. ``methods`` (from
    :func:`paired_tests_by_method`) has, per method: ``levels`` (all it produced),
    ``max_safe_level`` (null when even its lowest level is significantly worse), ``n_seeds``,
    ``min_attainable_p``, ``note`` and its ``paired_tests`` (the levels tested against the
    dense model).
    """
    curve = map_curve(maps)
    out: dict[str, Any] = {"map_dense": _median_at(curve, "l1", 0.0)}
    for k in REPORTED_LEVELS:
        out[f"map_at_{round(k * 100)}"] = _median_at(curve, "l1", k)
    if (curve["method"] == "random").any():
        for k in REPORTED_LEVELS:
            out[f"random_map_at_{round(k * 100)}"] = _median_at(curve, "random", k)
    out.update({
        "max_safe_sparsity": result.max_safe_sparsity,
        "test": config.test,
        "correction": config.correction,
        "alpha": config.alpha,
        "n_seeds": result.n_seeds,
        "min_attainable_p": result.min_attainable_p,
        "note": result.note,
        "paired_tests": _records(result.table),
    })
    if by_method is not None:
        out["methods"] = {method: {
            "levels": sorted(float(k) for k in maps.loc[maps["method"] == method, "sparsity"].unique()),
            "max_safe_level": r.max_safe_sparsity,
            "n_seeds": r.n_seeds,
            "min_attainable_p": r.min_attainable_p,
            "note": r.note,
            "paired_tests": _records(r.table),
        } for method, r in by_method.items()}
    return {k: json_clean(v) for k, v in out.items()}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: json_clean(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def _median_at(curve: pd.DataFrame, method: str, k: float) -> float | None:
    hit = curve[(curve["method"] == method) & np.isclose(curve["sparsity"], k, rtol=0, atol=LEVEL_TOLERANCE)]
    return None if hit.empty else json_clean(hit["map"].iloc[0])
