"""Per-class metrics of the pruned models, mAP against sparsity, and which levels are safe.

Analysis 1 of the study: mAP (the unweighted mean of per-class AP) at every sparsity ``k``,
summarised by its median over seeds, and two answers to "up to which ``k`` is pruning safe?",
every method against the same dense model (``l1`` at level 0 of the same seed).

**Safe sparsity: non-inferiority** (:func:`noninferiority_test`, ``evaluate.json`` keys
``max_noninferior_sparsity``, ``noninferiority``, ``margin``, ``noninferiority_note``, per
method ``max_noninferior_level``). Per seed the relative change ``d = mAP(k) / mAP(dense) - 1``;
a level is safe when the seeds *show* that its mean is above ``-evaluate.margin``
(:mod:`cxrprune.stats.noninferiority`: one-sided t test of ``d + margin``). Why not the
paired test below: a test that fails to reject "mAP(k) < mAP(dense)" calls a level safe for
lack of evidence, so few or disagreeing seeds make everything look safe (measured: 70% of
simulated studies called a level with a 0.034 mAP drop, 8% relative, safe). Non-inferiority
puts the burden of proof on the compressed model: noise can only fail to show safety. The
levels are tested in fixed sequence from the lowest up, each at full ``evaluate.alpha``,
stopping at the first level not shown (Maurer, Hothorn & Lehmacher 1995): the family-wise
error stays at alpha without Holm's division by the number of levels, which with 19 levels
would spend most of the power of a few seeds. Each tested level reports its MDE, the
smallest margin these seeds would show with 80% power for a lossless model: a level whose
MDE exceeds the margin could not have been shown safe, whatever its true loss. With fewer
than :data:`MIN_NI_SEEDS` seeds nothing is measured (null, and the note says why).

**The paper's "no significant drop", kept for comparison** (:func:`paired_test`, keys
``max_safe_sparsity``, ``paired_tests``, per method ``max_safe_level``): a one-sided paired
test across seeds of ``mAP(k) < mAP(0)`` for every ``k > 0`` (Wilcoxon signed-rank by
default, Holm-corrected across the levels); ``max_safe_sparsity`` is the largest ``k`` such
that no ``k' <= k`` is significantly worse than the dense model -- the paper's "prune up to
65% with no significant impact", made testable, and not evidence of safety.

The dense model itself is not tested: ``l1`` at 0, and a method's level 0 whose mAP equals
the dense one at every seed (any pruning method at 0; for non-inferiority any level that does,
whose zero variance the t test could not handle). It counts as safe, so a pruning method whose
first pruned level fails has 0.0 (only the dense model), and ``null`` means that not even the
method's lowest level was shown (e.g. ``int8``) or that nothing was measured.

The stage ``cxrprune.stages.evaluate`` only loads files and writes the tables built here.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.compression.predictions import BLOCK_KEYS, same_level
from cxrprune.core.atomic import json_clean
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.config import EvaluateConfig
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer
from cxrprune.datasets.prepare import load_meta
from cxrprune.stats import multiplicity
from cxrprune.stats.metrics import metrics_for_blocks
from cxrprune.stats.noninferiority import fixed_sequence

PER_CLASS_COLUMNS = ["seed", "method", "level", "class_name", "ap", "auroc", "f1"]
MAP_COLUMNS = ["seed", "method", "level", "map", "mean_auroc"]
CURVE_COLUMNS = ["level", "method", "map", "map_q25", "map_q75"]
# The paired-test and non-inferiority rows are evaluate.json records, whose "sparsity" key
# stays until a metrics-key migration (renaming it breaks `dvc exp` comparisons with older runs).
PAIRED_COLUMNS = ["sparsity", "n_seeds", "statistic", "p_raw", "p_adj", "significant", "median_map", "drop"]
NI_COLUMNS = ["method", "sparsity", "n", "mean_rel_change", "lower_bound", "p", "noninferior", "tested", "mde",
              "reason"]
# Non-inferiority needs the seeds' SD: with 2 seeds it rests on 1 degree of freedom (t quantile
# 6.3 at alpha 0.05), an estimate too unstable to call anything shown.
MIN_NI_SEEDS = 3

# Levels reported in evaluate.json as map_at_<percent>.
REPORTED_LEVELS = (0.5, 0.9, 0.95)


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
        raise DataError(f"{labels_path}: not found; run `dvc repro {producer('prepared')}` first")
    try:
        return pd.read_parquet(labels_path), classes
    except (OSError, ValueError) as exc:
        raise DataError(f"{labels_path}: not a readable parquet file ({exc}); "
                        f"rerun `dvc repro {producer('prepared')}`") from None



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

    Returns columns ``seed, method, level, class_name, ap, auroc, f1`` (``level``: the
    prediction table's ``sparsity``), blocks sorted by method then level, classes in the given order.

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
        "level": np.repeat(np.array([k for _, k in blocks], dtype=np.float64), n_classes),
        "class_name": np.tile(np.array(classes, dtype=object), len(blocks)),
        "ap": np.concatenate([r.ap for r in results]),
        "auroc": np.concatenate([r.auroc for r in results]),
        "f1": np.concatenate([r.f1 for r in results]),
    }, columns=PER_CLASS_COLUMNS)


def map_table(per_class: pd.DataFrame) -> pd.DataFrame:
    """mAP and mean AUROC per (seed, method, level): plain means over classes.

    No NaN is skipped: an undefined per-class value would silently change the set of
    classes a mAP averages over, so it is an error instead (:func:`per_class_metrics`
    never produces one for a valid test set).
    """
    _require_columns(per_class, PER_CLASS_COLUMNS, "per-class table")
    undefined = per_class[per_class[["ap", "auroc"]].isna().any(axis=1)]
    if len(undefined):
        row = undefined.iloc[0]
        raise DataError(f"per-class table: undefined AP/AUROC for class {row['class_name']!r} "
                        f"(seed {row['seed']}, {row['method']}@{row['level']:g}); mAP would be undefined")
    out = (per_class.groupby(["seed", "method", "level"], sort=True)
           .agg(map=("ap", "mean"), mean_auroc=("auroc", "mean")).reset_index())
    return out[MAP_COLUMNS]


def map_curve(maps: pd.DataFrame) -> pd.DataFrame:
    """Median mAP over seeds per (method, level), with the 25th and 75th percentiles."""
    g = maps.groupby(["method", "level"], sort=True)["map"]
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
        raise DataError(f"test labels: class columns must hold only 0 and 1; rerun `dvc repro {producer('prepared')}`")
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
                        f"rerun `dvc repro {producer('predictions_file')}` after `dvc repro {producer('prepared')}`")
    differ = got != expected
    if differ.any():
        i = int(np.argmax(differ))
        raise DataError(f"{where}: image ids differ from the test labels' order first at row {i} "
                        f"(got {got[i]!r}, expected {expected[i]!r}); rerun `dvc repro {producer('predictions_file')}`")


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
    method: str = DENSE_REFERENCE.method,
    test: str = "wilcoxon",
    correction: str = "holm",
    alpha: float = 0.05,
) -> PairedTestResult:
    """One-sided paired test across seeds of ``mAP(method, k) < mAP(dense)`` for every level
    ``k`` of ``method``; the dense model is ``l1`` at 0 (:data:`~cxrprune.core.catalog.DENSE_REFERENCE`).

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
    wide, dense = _paired_with_dense(maps, method)
    all_levels = [float(k) for k in wide.columns]
    levels = [k for k in all_levels
              if k > 0 or (method != DENSE_REFERENCE.method and not np.array_equal(wide[k].to_numpy(), dense))]
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
    _require_columns(maps, ["seed", "method", "level", "map"], "mAP table")
    out = {}
    for method, expected in method_levels.items():
        got = np.sort(maps.loc[maps["method"] == method, "level"].unique())
        want = np.sort(np.asarray(expected, dtype=np.float64))
        if len(got) != len(want) or not same_level(got, want).all():
            raise DataError(f"mAP table: method {method!r} has levels {[float(k) for k in got]}, expected "
                            f"{[float(k) for k in want]}; rerun `dvc repro {producer('predictions_file')}` "
                            f"and `dvc repro {producer('map_by_seed')}`")
        out[method] = paired_test(maps, method, test, correction, alpha)
    return out


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values in the input order (:func:`cxrprune.stats.multiplicity.holm`),
    for families where every test was done: a NaN here is a bug upstream, so it is an error."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.isnan(p).any():
        raise ValueError(f"holm needs a 1-D array of p-values in [0, 1], got {p!r}")
    return multiplicity.holm(p).as_array()


def max_safe_sparsity(levels: Sequence[float], significant: Sequence[bool]) -> float:
    """The largest level ``k`` such that no level ``0 < k' <= k`` is significant.

    Scanning upwards, the first significant level stops the scan: a drop at 0.3 caps the
    answer at 0.25 even if 0.35 is not significant. 0.0 when the first level is
    significant; the largest level when none is.
    """
    safe = max_safe_level(levels, significant)  # the same scan; only "none safe" differs
    return 0.0 if safe is None else safe


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


def _paired_with_dense(maps: pd.DataFrame, method: str) -> tuple[pd.DataFrame, np.ndarray]:
    """``method``'s mAP as seeds x levels, and the dense model's mAP of the same seeds."""
    reference = _map_by_seed(maps, DENSE_REFERENCE.method, need_dense=True)
    wide = reference if method == DENSE_REFERENCE.method else _map_by_seed(maps, method, need_dense=False)
    if list(wide.index) != list(reference.index):
        raise DataError(f"mAP table: method {method!r} has seeds {list(wide.index)} but the dense model "
                        f"({DENSE_REFERENCE.method}@0) has {list(reference.index)}, so the test cannot pair seeds")
    return wide, reference[DENSE_REFERENCE.level].to_numpy()


def _map_by_seed(maps: pd.DataFrame, method: str, need_dense: bool = True) -> pd.DataFrame:
    _require_columns(maps, ["seed", "method", "level", "map"], "mAP table")
    rows = maps[maps["method"] == method]
    if rows.empty:
        raise DataError(f"mAP table: no rows for method {method!r}")
    if rows.duplicated(["seed", "level"]).any():
        raise DataError(f"mAP table: duplicate (seed, level) rows for method {method!r}")
    wide = rows.pivot(index="seed", columns="level", values="map").sort_index(axis=1)
    if need_dense and 0.0 not in wide.columns:
        raise DataError(f"mAP table: method {method!r} has no dense level (level 0)")
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


# --- non-inferiority --------------------------------------------------------------------


class NISequence(NamedTuple):
    """Outcome of :func:`noninferior_sequence`.

    ``table``: one row per level, ascending: ``level, n, mean_rel_change, lower_bound, p,
    noninferior, tested, mde, reason``. ``noninferior``: shown non-inferior, which only a level
    the sequence reached (``tested``) can be; past the first failure p and the bound are for
    information only. ``reason`` says why a level has no p.
    ``largest``: the largest level before the first level not shown (None when the lowest is
    not shown, or when nothing was measured); ``first_failed``: that level, None if every level
    was shown. ``measured`` False (with ``reason``) with fewer than :data:`MIN_NI_SEEDS` seeds.
    """

    table: pd.DataFrame
    largest: float | None
    first_failed: float | None
    measured: bool
    reason: str | None


IDENTICAL = "equal to the dense model at every seed: the dense model itself, no test needed"
NI_SEQUENCE_COLUMNS = ["level", *NI_COLUMNS[2:]]


def noninferior_sequence(diffs: Mapping[float, Any], margin: float, alpha: float) -> NISequence:
    """Non-inferiority of every level in fixed sequence, lowest first
    (:func:`cxrprune.stats.noninferiority.fixed_sequence`), from ``diffs``: level -> the
    relative change against the dense model per seed (the same seeds at every level).

    A level whose change is exactly 0 at every seed is the dense model itself (``l1`` at 0, a
    pruning method at 0, a level that pruned nothing): it passes without a test, as the zero
    variance would leave the t test undefined, and it spends no alpha. Fewer than
    :data:`MIN_NI_SEEDS` seeds: nothing is measured, no p is computed."""
    levels = sorted(float(k) for k in diffs)
    d = {float(k): np.asarray(v, dtype=np.float64) for k, v in diffs.items()}
    sizes = {v.size for v in d.values()}
    if len(sizes) > 1:
        raise ValueError(f"noninferior_sequence needs the same seeds at every level, got sizes {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    if n < MIN_NI_SEEDS:
        reason = (f"{n} seed(s): non-inferiority needs at least {MIN_NI_SEEDS}, as the seeds' SD would rest on "
                  f"{max(n - 1, 0)} degree(s) of freedom")
        rows = [(k, n, float(d[k].mean()) if n else math.nan, math.nan, math.nan, False, False, math.nan, reason)
                for k in levels]
        return NISequence(_ni_frame(rows), None, None, False, reason)
    identical = {k for k in levels if not d[k].any()}
    to_test = [k for k in levels if k not in identical]
    seq = fixed_sequence(to_test, [d[k] for k in to_test], margin, alpha) if to_test else None
    first_failed = seq.first_failed if seq is not None else None
    steps = {step.level: step for step in seq.steps} if seq is not None else {}
    rows = []
    for k in levels:
        reached = first_failed is None or k <= first_failed
        if k in identical:
            rows.append((k, n, 0.0, math.nan, math.nan, reached, reached, math.nan, IDENTICAL))
            continue
        step = steps[k]  # past the first failure: p and bound for information, nothing shown
        r = step.result
        rows.append((k, r.n, r.mean, _nan(r.lower_bound), _nan(r.p), step.passed, step.tested, _nan(r.mde),
                     r.reason))
    largest = max_safe_level(levels, [first_failed is not None and k >= first_failed for k in levels])
    return NISequence(_ni_frame(rows), largest, first_failed, True, None)


class NonInferiorityResult(NamedTuple):
    """Outcome of :func:`noninferiority_test`: ``table`` (:data:`NI_COLUMNS`, the reference
    block ``l1`` at 0 left out), ``max_level`` (null when not even the method's lowest level is
    shown, or nothing was measured), ``n_seeds`` and ``note`` (why nothing was measured, or
    that the first level not shown could not have been shown with these seeds)."""

    table: pd.DataFrame
    max_level: float | None
    n_seeds: int
    note: str | None


def noninferiority_test(maps: pd.DataFrame, method: str = DENSE_REFERENCE.method, margin: float = 0.05,
                        alpha: float = 0.05) -> NonInferiorityResult:
    """Is ``method``'s mAP shown to lose less than ``margin`` (relative) at each level?

    Per seed ``d = mAP(method, k) / mAP(dense) - 1`` against the dense model of the same seed
    (:data:`~cxrprune.core.catalog.DENSE_REFERENCE`), tested in fixed sequence by :func:`noninferior_sequence`."""
    wide, dense = _paired_with_dense(maps, method)
    if not (dense > 0).all():
        seed = wide.index[int(np.argmin(dense > 0))]
        raise DataError(f"mAP table: the dense model's mAP is {dense.min():g} at seed {seed}, "
                        "so the relative change is undefined")
    seq = noninferior_sequence({float(k): wide[k].to_numpy() / dense - 1.0 for k in wide.columns}, margin, alpha)
    table = seq.table.rename(columns={"level": "sparsity"})
    if method == DENSE_REFERENCE.method:
        table = table[table["sparsity"] != DENSE_REFERENCE.level]
    table = table.assign(method=method)[NI_COLUMNS].reset_index(drop=True)
    return NonInferiorityResult(table, seq.largest, len(wide), _ni_note(seq, margin))


def noninferiority_by_method(maps: pd.DataFrame, methods: Iterable[str], margin: float,
                             alpha: float) -> dict[str, NonInferiorityResult]:
    """:func:`noninferiority_test` of every method, each against the dense model."""
    return {m: noninferiority_test(maps, m, margin, alpha) for m in methods}


def _ni_note(seq: NISequence, margin: float) -> str | None:
    """Why nothing was measured, or that the sequence stopped where it could not have gone on:
    the first level not shown had an MDE above the margin (or no standard error at all)."""
    if not seq.measured:
        return f"non-inferiority not measured: {seq.reason}; its levels are null"
    if seq.first_failed is None:
        return None
    row = seq.table[seq.table["level"] == seq.first_failed].iloc[0]
    if isinstance(row["reason"], str):
        return f"the sequence stopped at {seq.first_failed:g}: {row['reason']}"
    if row["mde"] > margin:
        return (f"the sequence stopped at {seq.first_failed:g}, where these {int(row['n'])} seeds could not have "
                f"shown non-inferiority even for a lossless model (MDE {row['mde']:.3g} > margin {margin:g}): "
                "more seeds, not only a smaller loss, are needed to go further")
    return None


_NI_DTYPES = (np.float64, np.int64, np.float64, np.float64, np.float64, bool, bool, np.float64, object)


def _ni_frame(rows: list[tuple]) -> pd.DataFrame:
    columns = list(zip(*rows)) if rows else [()] * len(NI_SEQUENCE_COLUMNS)
    return pd.DataFrame({name: np.asarray(col, dtype=dtype)
                         for name, col, dtype in zip(NI_SEQUENCE_COLUMNS, columns, _NI_DTYPES)})


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


# --- summary ----------------------------------------------------------------------------


def summarize(maps: pd.DataFrame, result: PairedTestResult, config: EvaluateConfig,
              by_method: dict[str, PairedTestResult] | None = None) -> dict[str, Any]:
    """The content of ``metrics/<name>/evaluate.json``: JSON-safe, NaN written as null.

    Non-inferiority (:func:`noninferiority_test`, at ``config.margin`` and ``config.alpha``) of
    L1 and of every method of ``by_method``: ``max_noninferior_sparsity`` (L1's largest level
    shown to lose less than the margin, 0.0 when only the dense model, null when not measured),
    ``margin``, ``noninferiority_note`` (L1's) and ``noninferiority`` (the table, every method);
    per method ``max_noninferior_level`` and ``noninferiority_note``.

    ``map_dense`` and ``map_at_<50|90|95>`` are L1 medians over seeds (null when that level
    was not evaluated); ``random_map_at_*`` likewise for random pruning when it is present.
    ``paired_tests`` lists the per-level test table of L1. ``methods`` (from
    :func:`paired_tests_by_method`) has, per method: ``levels`` (all it produced),
    ``max_safe_level`` (null when even its lowest level is significantly worse), ``n_seeds``,
    ``min_attainable_p``, ``note`` and its ``paired_tests`` (the levels tested against the
    dense model).
    """
    curve = map_curve(maps)
    out: dict[str, Any] = {"map_dense": _median_at(curve, *DENSE_REFERENCE)}
    for k in REPORTED_LEVELS:
        out[f"map_at_{round(k * 100)}"] = _median_at(curve, DENSE_REFERENCE.method, k)
    if (curve["method"] == "random").any():
        for k in REPORTED_LEVELS:
            out[f"random_map_at_{round(k * 100)}"] = _median_at(curve, "random", k)
    methods = [DENSE_REFERENCE.method, *(m for m in (by_method or {}) if m != DENSE_REFERENCE.method)]
    ni = noninferiority_by_method(maps, methods, config.margin, config.alpha)
    out.update({
        "max_noninferior_sparsity": ni[DENSE_REFERENCE.method].max_level,
        "margin": config.margin,
        "noninferiority_note": ni[DENSE_REFERENCE.method].note,
        "noninferiority": _records(pd.concat([r.table for r in ni.values()], ignore_index=True)),
        # The paper's "no significant drop" (a failure to reject), kept for comparison.
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
            "levels": sorted(float(k) for k in maps.loc[maps["method"] == method, "level"].unique()),
            "max_safe_level": r.max_safe_sparsity,
            "n_seeds": r.n_seeds,
            "min_attainable_p": r.min_attainable_p,
            "note": r.note,
            "paired_tests": _records(r.table),
            "max_noninferior_level": ni[method].max_level,
            "noninferiority_note": ni[method].note,
        } for method, r in by_method.items()}
    return {k: json_clean(v) for k, v in out.items()}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: json_clean(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def _median_at(curve: pd.DataFrame, method: str, k: float) -> float | None:
    hit = curve.loc[(curve["method"].to_numpy() == method) & same_level(curve["level"].to_numpy(), k)]
    return None if hit.empty else json_clean(hit["map"].iloc[0])
