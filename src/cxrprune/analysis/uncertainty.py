"""Confidence intervals of the study's statistics from one set of bootstrap resamples.

The evaluate stage computes the AP of every class in every (seed, method, level) block for
every resample of the test patients (:func:`ap_resamples`, written once as
``data/bootstrap/<name>/ap_resamples.npz``); from those arrays follow the intervals of the
mAP at every level (:func:`map_intervals`), of every class's forgettability curve and of
the correlations of analysis 2 and 3 (:func:`forgetting_intervals`); the PIE ratios reuse
the same image multiplicities (:func:`pie_intervals`). See :mod:`cxrprune.analysis.bootstrap`
for the resampling and when seeds are resampled too.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cxrprune.analysis import bootstrap
from cxrprune.analysis.forgetting import MIN_POINTS, relative_ap, round_levels
from cxrprune.compression.methods import method_levels
from cxrprune.core.atomic import atomic_path
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer


@dataclass
class APResamples:
    """AP of every (seed, method, level, resample, class); ``ap`` is (S, M, L, B, C) float32."""

    seeds: list[int]
    methods: list[str]
    levels: np.ndarray
    classes: list[str]
    ap: np.ndarray
    resamples: int
    seed: int  # bootstrap.seed
    level: float  # confidence level
    unit: str = "test images"  # what the first stage resampled: "patients" or "test images" (:func:`unit_of`)

    def seed_draws(self) -> np.ndarray | None:
        return bootstrap.seed_resamples(len(self.seeds), self.resamples, self.seed)


PATIENT = "patient_id"


def unit_of(labels: pd.DataFrame) -> str:
    """The first stage's resampling unit: patients when the labels say whose image each is."""
    return "patients" if PATIENT in labels.columns else "test images"


def image_weights(labels: pd.DataFrame, resamples: int, seed: int) -> np.ndarray:
    """Multiplicities ``(N, B)`` of the test images in the seeded resamples, one draw of whole
    patients per resample (:func:`~cxrprune.analysis.bootstrap.cluster_counts`), or of images
    when the labels have no patient ids. Evaluate and analyze both call this, so they see the
    same resamples."""
    if PATIENT in labels.columns:
        return bootstrap.cluster_counts(labels[PATIENT].to_numpy(), resamples, seed)
    return bootstrap.resample_counts(len(labels), resamples, seed)


def block_ap(predictions: pd.DataFrame, y: np.ndarray, classes: Sequence[str], w: np.ndarray,
             methods: Sequence[str], levels: Sequence[float]) -> np.ndarray:
    """(M, L, B, C) AP resamples of one seed's prediction table (blocks in test order, as the
    prediction contract guarantees and the evaluate stage has checked); NaN where a method
    has no such level (:func:`~cxrprune.compression.methods.method_levels`)."""
    keys = list(zip(predictions["method"].astype(str), round_levels(predictions["sparsity"])))
    rows: dict[tuple[str, float], list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    scores = predictions[list(classes)].to_numpy()
    out = np.full((len(methods), len(levels), w.shape[1], len(classes)), np.nan, dtype=np.float32)
    for mi, m in enumerate(methods):
        produced = {float(k) for k in round_levels(method_levels(m, levels))}
        for li, k in enumerate(round_levels(levels)):
            if float(k) not in produced:
                continue  # a one-level method (int8, fp16, bf16) has no block here: its entry stays NaN
            idx = rows.get((m, float(k)))
            if idx is None:
                raise DataError(f"predictions lack the block {m}@{k:g}; rerun prune")
            out[mi, li] = bootstrap.weighted_ap(y, scores[idx], w)
    return out


def save(path: Path, res: APResamples | None) -> None:
    """Write the resamples atomically; None (``bootstrap.resamples: 0``) writes an empty file
    so that the stage's output exists either way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        if res is None:
            np.savez(f, config=np.zeros(3))
            return
        np.savez(f, ap=res.ap, seeds=np.asarray(res.seeds), methods=np.asarray(res.methods),
                 levels=res.levels, classes=np.asarray(res.classes),
                 config=np.asarray([res.resamples, res.seed, res.level], dtype=np.float64), unit=np.asarray(res.unit))


def load(path: Path) -> APResamples | None:
    """The evaluate stage's resamples, or None when it ran without intervals."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {producer('ap_resamples')}`") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun `dvc repro {producer('ap_resamples')} --force`") from None
    with z:
        cfg = z["config"]
        if int(cfg[0]) == 0:
            return None
        return APResamples([int(s) for s in z["seeds"]], [str(m) for m in z["methods"]], z["levels"],
                           [str(c) for c in z["classes"]], z["ap"], int(cfg[0]), int(cfg[1]), float(cfg[2]),
                           str(z["unit"]) if "unit" in z.files else "test images")


def _over_seeds(values: np.ndarray, draws: np.ndarray | None) -> np.ndarray:
    """Median over seeds (axis 0 of (S, ..., B, ...)) per resample; with seed draws (B, S),
    resample b takes the median over its drawn seeds. ``values`` has B on axis ``-2``."""
    if draws is None:
        return np.nanmedian(values, axis=0)
    moved = np.moveaxis(values, -2, 0)  # (B, S, ...)
    picked = moved[np.arange(len(draws))[:, None], draws]  # (B, S, ...)
    return np.moveaxis(np.nanmedian(picked, axis=1), 0, -2)


def map_intervals(res: APResamples) -> pd.DataFrame:
    """``method, level, map_lo, map_hi``: interval of the median-over-seeds mAP per level."""
    with np.errstate(invalid="ignore"), _quiet():
        per_seed = np.nanmean(res.ap, axis=-1)  # (S, M, L, B): a resample lacking a class's positives skips it
        med = _over_seeds(per_seed[..., None], res.seed_draws())[..., 0]  # (M, L, B)
    lo, hi = bootstrap.percentile_ci(np.moveaxis(med, -1, 0), res.level)
    return pd.DataFrame({"method": np.repeat(res.methods, len(res.levels)),
                         "level": np.tile(res.levels, len(res.methods)),
                         "map_lo": lo.ravel(), "map_hi": hi.ravel()})


def curve_resamples(res: APResamples, method: str = DENSE_REFERENCE.method, chance: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Forgettability curves per resample: (levels k > 0, (L', B, C)); with ``chance`` (B, C),
    each resample's chance level, the chance-corrected curves (:func:`~cxrprune.analysis.forgetting.relative_ap`)."""
    mi = res.methods.index(method)
    levels = round_levels(res.levels)
    zero = int(np.flatnonzero(levels == 0.0)[0])
    ap = res.ap[:, mi].astype(np.float64)  # (S, L, B, C)
    rel = relative_ap(ap, ap[:, zero:zero + 1], chance)
    keep = levels > 0
    with _quiet():
        return levels[keep], _over_seeds(rel[:, keep], res.seed_draws())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """All-NaN medians are expected for a class a resample lacks; their warning is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def correlation_resamples(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and Spearman rho per row of ``x`` (B, n) against ``y`` (B, n) or (n,), each
    over the pairs where both are finite (NaN with fewer than 3), vectorised over rows."""
    x = np.asarray(x, dtype=np.float64)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), x.shape)
    ok = np.isfinite(x) & np.isfinite(y)
    xm, ym = np.where(ok, x, np.nan), np.where(ok, y, np.nan)
    r = _masked_pearson(xm, ym, ok)
    rho = _masked_pearson(stats.rankdata(xm, axis=1, nan_policy="omit"),
                          stats.rankdata(ym, axis=1, nan_policy="omit"), ok)
    return r, rho


def _masked_pearson(x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        xc = np.where(ok, x - np.nanmean(np.where(ok, x, np.nan), axis=1, keepdims=True), 0.0)
        yc = np.where(ok, y - np.nanmean(np.where(ok, y, np.nan), axis=1, keepdims=True), 0.0)
        r = (xc * yc).sum(axis=1) / np.sqrt((xc ** 2).sum(axis=1) * (yc ** 2).sum(axis=1))
    r[n < MIN_POINTS] = np.nan
    return np.clip(r, -1.0, 1.0)


def forgetting_intervals(res: APResamples, counts: pd.Series, w: np.ndarray, y_test: np.ndarray,
                         threshold: float, dap_sparsity: float, distance: str, weighting: str
                         ) -> tuple[dict[str, list], pd.DataFrame]:
    """Intervals of analysis 2 and 3: ``{key_ci: [lo, hi]}`` for the r and rho of first drop
    and dAP@95 vs ln(train count) and of FCD vs |d ln f| and vs IoU^(1/4), and the curve
    bands (``level, class_name, rel_dap_lo, rel_dap_hi``). The FCD's label statistics are
    recomputed on each resample of the test labels ``y_test`` (N, C) with multiplicities ``w``."""
    levels, curves = curve_resamples(res)  # (L', B, C)
    lo, hi = bootstrap.percentile_ci(np.moveaxis(curves, 1, 0), res.level)  # (L', C)
    bands = pd.DataFrame({"level": np.repeat(levels, len(res.classes)),
                          "class_name": np.tile(res.classes, len(levels)),
                          "rel_dap_lo": lo.ravel(), "rel_dap_hi": hi.ravel()})
    out = _frequency_intervals(levels, curves, counts.reindex(res.classes), threshold, dap_sparsity, res.level)

    # FCD per pair and resample, against each resample's label statistics.
    ia, ib = np.triu_indices(len(res.classes), k=1)
    diff = curves[:, :, ia] - curves[:, :, ib]  # (L', B, P)
    fcd = np.sqrt((diff ** 2).sum(axis=0)) if distance == "euclidean" else (diff ** 2).mean(axis=0)
    dlnf, iouq = _label_resamples(y_test, w, weighting, ia, ib)
    for name, other in (("freq", dlnf), ("iou", iouq)):
        r, rho = correlation_resamples(fcd, other)
        out[f"{name}_r_ci"], out[f"{name}_rho_ci"] = bootstrap.interval(r, res.level), bootstrap.interval(rho, res.level)
    return out, bands


def _frequency_intervals(levels: np.ndarray, curves: np.ndarray, counts: pd.Series, threshold: float,
                         dap_sparsity: float, level: float, suffix: str = "") -> dict[str, list]:
    """``first_drop{suffix}_r_ci``, ``_rho_ci`` and ``dap95{suffix}_r_ci``, ``_rho_ci``: the
    intervals of the curves' first drop below ``-threshold`` and value at ``dap_sparsity``
    against ln(train count) (``counts`` in the curves' class order; a NaN count leaves its
    class out of every resample)."""
    below = curves < -threshold  # (L', B, C)
    first = np.where(below.any(axis=0), levels[np.argmax(below, axis=0)], np.nan)  # (B, C)
    match = np.flatnonzero(levels == round(float(dap_sparsity), 6))
    dap = curves[int(match[0])] if len(match) else np.full(first.shape, np.nan)
    c = counts.to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_count = np.where(c > 0, np.log(np.where(c > 0, c, 1)), np.nan)
    out: dict[str, list] = {}
    for name, values in (("first_drop", first), ("dap95", dap)):
        r, rho = correlation_resamples(values, ln_count)
        out[f"{name}{suffix}_r_ci"] = bootstrap.interval(r, level)
        out[f"{name}{suffix}_rho_ci"] = bootstrap.interval(rho, level)
    return out


def chance_corrected_intervals(res: APResamples, counts: pd.Series, test_labels: pd.DataFrame,
                               included: Sequence[str], threshold: float, dap_sparsity: float) -> dict[str, list]:
    """The intervals of the chance-corrected correlations (:mod:`cxrprune.analysis.chance_corrected`):
    ``first_drop_chance_corrected_{r,rho}_ci`` and ``dap95_chance_corrected_{r,rho}_ci``, over
    the classes ``included`` (the point estimate's; the others are left out of every resample).
    The chance level is recomputed in each resample (its test prevalence under the very image
    multiplicities :func:`analysis_intervals` uses), as the AP it is subtracted from is. The
    keys start with ``first_drop``/``dap95`` like :func:`forgetting_intervals`'s. The prevalence
    is computed here rather than imported from :mod:`~cxrprune.analysis.chance_corrected`: the
    evaluate stage imports this module, and DVC would rerun it for every change of that one."""
    w = image_weights(test_labels, res.resamples, res.seed)
    y = test_labels[list(res.classes)].to_numpy()
    chance = _weighted_fraction(w, np.ones(len(y), dtype=bool), y).T  # (B, C): each resample's prevalence
    levels, curves = curve_resamples(res, chance=chance)
    kept = counts.reindex(res.classes).where(pd.Index(res.classes).isin(list(included)))
    return _frequency_intervals(levels, curves, kept, threshold, dap_sparsity, res.level, "_chance_corrected")


def _label_resamples(y: np.ndarray, w: np.ndarray, weighting: str, ia: np.ndarray, ib: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """|d ln f| and IoU^(1/4) of every pair (B, P) from the weighted test labels."""
    y = np.asarray(y, dtype=np.float64)
    m = np.einsum("nb,nc,nd->bcd", w.astype(np.float64), y, y, optimize=True)  # Y^T diag(w_b) Y
    f = m.sum(axis=1) if weighting == "label" else np.diagonal(m, axis1=1, axis2=2)
    denom = f[:, :, None] + f[:, None, :] - m
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(denom > 0, m / np.where(denom > 0, denom, 1.0), np.nan)
        ln_f = np.where(f > 0, np.log(np.where(f > 0, f, 1.0)), np.nan)
    return np.abs(ln_f[:, ia] - ln_f[:, ib]), iou[:, ia, ib] ** 0.25


def _weighted_fraction(w: np.ndarray, group: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Per resample, the weighted fraction of ``flag`` (N,) or (N, C) within ``group``: one
    mask (N,) for every resample, or one per resample (N, B)."""
    if group.ndim == 2:
        wg = np.where(group, w, 0.0)  # (N, B)
    else:
        wg, flag = w[group], flag[group]  # (n, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (flag.T.astype(np.float64) @ wg) / wg.sum(axis=0) if flag.ndim == 2 else \
            (flag.astype(np.float64) @ wg) / wg.sum(axis=0)


def pie_intervals(w: np.ndarray, is_pie: np.ndarray, y_test: np.ndarray, n_findings: np.ndarray,
                  classes: Sequence[str], truth: pd.DataFrame | None,
                  level: float) -> tuple[dict[str, Any], pd.DataFrame]:
    """Intervals of the PIE ratios over the same patient resamples. ``is_pie`` is the run's
    PIE set (N,), or one set per resample (N, B) redrawn from the resampled seeds
    (:func:`cxrprune.analysis.pies.selection_resamples`): the PIE set is itself an estimate,
    and holding it fixed leaves its noise out of the interval. Returns ``{key_ci: [lo, hi]}``
    and per class ``class_name, ratio_lo, ratio_hi``. ``w``, ``is_pie``, ``y_test`` and
    ``truth`` are in one image order.

    The rare-class enrichment has no interval here: its permutation p-value
    (:func:`cxrprune.analysis.pies.rare_class_enrichment`) decides."""
    is_pie = np.asarray(is_pie, dtype=bool)
    out: dict[str, Any] = {}

    def ratio(flag: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return _weighted_fraction(w, is_pie, flag) / _weighted_fraction(w, ~is_pie, flag)

    out["ratio_3plus_findings_ci"] = bootstrap.interval(ratio(n_findings >= 3), level)
    class_ratio = ratio(np.asarray(y_test, dtype=bool))  # (C, B)
    lo, hi = bootstrap.percentile_ci(class_ratio.T, level)
    per_class = pd.DataFrame({"class_name": list(classes), "ratio_lo": lo, "ratio_hi": hi})
    if truth is not None:
        flipped = truth["flipped"].to_numpy(dtype=np.float64) > 0
        degraded = (truth["degradation"].astype(str) != "none").to_numpy()
        quality = truth["quality"].to_numpy(dtype=np.float64)
        out["ratio_flipped_label_ci"] = bootstrap.interval(ratio(flipped), level)
        out["ratio_degraded_ci"] = bootstrap.interval(ratio(degraded), level)
        out["mean_quality_pie_ci"] = bootstrap.interval(_weighted_fraction(w, is_pie, quality), level)
        out["mean_quality_nonpie_ci"] = bootstrap.interval(_weighted_fraction(w, ~is_pie, quality), level)
        out["quality_difference_ci"] = bootstrap.interval(
            _weighted_fraction(w, is_pie, quality) - _weighted_fraction(w, ~is_pie, quality), level)
    return out, per_class


class Collector:
    """Gathers every seed's AP resamples while the evaluate stage reads the seeds one by one
    (one prediction table in memory at a time)."""

    def __init__(self, labels: pd.DataFrame, classes: Sequence[str], resamples: int, seed: int, level: float):
        self.y = labels[list(classes)].to_numpy()
        self.classes = list(classes)
        self.cfg = (resamples, seed, level)
        self.w = image_weights(labels, resamples, seed)
        self.unit = unit_of(labels)
        self.seeds: list[int] = []
        self.blocks: list[np.ndarray] = []
        self.methods: list[str] | None = None
        self.levels: np.ndarray | None = None

    def add(self, seed: int, predictions: pd.DataFrame) -> None:
        methods = list(dict.fromkeys(predictions["method"].astype(str)))
        levels = np.unique(round_levels(predictions["sparsity"]))
        if self.methods is None:
            self.methods, self.levels = methods, levels
        elif methods != self.methods or not np.array_equal(levels, self.levels):
            raise DataError(f"predictions of seed {seed} hold other methods or levels than seed {self.seeds[0]}; "
                            f"rerun prune for every seed")
        self.seeds.append(seed)
        self.blocks.append(block_ap(predictions, self.y, self.classes, self.w, methods, levels))

    def result(self) -> APResamples:
        return APResamples(self.seeds, self.methods or [], self.levels if self.levels is not None else np.zeros(0),
                           self.classes, np.stack(self.blocks), *self.cfg, self.unit)


def with_map_intervals(curve: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """The mAP curve table with ``map_lo, map_hi`` columns added (matched by method and level)."""
    key = intervals.assign(level=round_levels(intervals["level"]))
    merged = curve.assign(_k=round_levels(curve["level"])).merge(
        key.rename(columns={"level": "_k"}), on=["method", "_k"], how="left", validate="1:1")
    return merged.drop(columns="_k")


def map_ci_keys(intervals: pd.DataFrame, reported: Sequence[float]) -> dict[str, list]:
    """``map_dense_ci``, ``map_at_<pct>_ci`` (and ``random_map_at_<pct>_ci``) for evaluate.json."""
    out: dict[str, list] = {}

    def at(method: str, k: float) -> list | None:
        hit = intervals[(intervals["method"] == method) & (round_levels(intervals["level"]) == round(k, 6))]
        if hit.empty:
            return None
        lo, hi = hit[["map_lo", "map_hi"]].iloc[0]
        return [None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi)]

    out["map_dense_ci"] = at(*DENSE_REFERENCE)
    for k in reported:
        out[f"map_at_{round(k * 100)}_ci"] = at(DENSE_REFERENCE.method, k)
        if (intervals["method"] == "random").any():
            out[f"random_map_at_{round(k * 100)}_ci"] = at("random", k)
    return out


def describe(res: APResamples) -> dict[str, Any]:
    """What the intervals are (for evaluate.json and summary.json)."""
    return {"resamples": res.resamples, "seed": res.seed, "level": res.level, "unit": res.unit,
            "seeds_resampled": res.seed_draws() is not None, "min_seeds_to_resample": bootstrap.MIN_SEEDS}


def analysis_intervals(res: APResamples, counts: pd.Series, test_labels: pd.DataFrame, classes: Sequence[str],
                       image_ids: np.ndarray, is_pie: np.ndarray, n_findings: np.ndarray,
                       truth: pd.DataFrame | None, threshold: float, dap_sparsity: float, distance: str,
                       weighting: str) -> tuple[dict[str, dict], pd.DataFrame, pd.DataFrame]:
    """Every interval of the analyze stage from the evaluate stage's resamples: ``_ci`` keys
    per summary section (``forgettability``, ``fcd``, ``pie``), the curve bands and the
    per-class PIE ratio bands. ``is_pie`` is the run's PIE set (N,) or one per resample (N, B)
    (:func:`pie_intervals`). The image multiplicities are redrawn from the same seed, so
    they are the very resamples evaluate used; ``image_ids`` (the PIE rows' order) are
    matched to the test labels' order, which is the resamples' order."""
    label_ids = test_labels["image_id"].astype(str).to_numpy()
    w = image_weights(test_labels, res.resamples, res.seed)
    position = pd.Index(label_ids).get_indexer([str(i) for i in image_ids])
    if (position < 0).any():
        raise DataError("predictions list test images absent from the prepared labels; rerun prune after prepare")
    y = test_labels[list(classes)].to_numpy()
    ci, bands = forgetting_intervals(res, counts, w, y, threshold, dap_sparsity, distance, weighting)
    pie_ci, class_bands = pie_intervals(w[position], is_pie, y[position], n_findings, classes, truth, res.level)
    forget = {k: v for k, v in ci.items() if k.startswith(("first_drop", "dap95"))}
    fcd = {k: v for k, v in ci.items() if k.startswith(("freq", "iou"))}
    return {"forgettability": forget, "fcd": fcd, "pie": pie_ci}, bands, class_bands
