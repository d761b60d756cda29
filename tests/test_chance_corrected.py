"""Chance-corrected forgetting: the artefact it removes, a planted effect it finds, the classes
it leaves out, and the chance level it rests on."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score

from cxrprune.analysis import chance_corrected as cc
from cxrprune.analysis import forgetting, uncertainty
from cxrprune.core.errors import DataError
from cxrprune.stats.metrics import average_precision, classification_metrics

N_TEST = 2000
LEVELS = (0.0, 0.5, 0.9, 0.95)
SEEDS = (0, 1, 2)
# 12 classes, train counts 20..2000 (log-spaced); test prevalence proportional to frequency.
COUNTS = pd.Series(np.round(np.geomspace(20, 2000, 12)).astype(int), index=[f"c{i:02d}" for i in range(12)])
CLASSES = list(COUNTS.index)


def make_labels(prevalence: np.ndarray, n: int = N_TEST) -> pd.DataFrame:
    """Test labels with exactly round(prevalence * n) positives per class."""
    y = np.zeros((n, len(CLASSES)), dtype=np.int8)
    for j, p in enumerate(prevalence):
        y[: max(1, int(round(p * n))), j] = 1
    return pd.DataFrame(y, columns=CLASSES)


PREVALENCE = make_labels(0.25 * COUNTS.to_numpy() / COUNTS.max())[CLASSES].mean().to_numpy()


def table(ap: dict[float, np.ndarray], auroc: dict[float, np.ndarray]) -> pd.DataFrame:
    """A per-class table; ``ap[k]``/``auroc[k]`` are (seeds, classes) arrays per level."""
    rows = [{"seed": s, "method": "l1", "level": k, "class_name": c, "ap": ap[k][i, j], "auroc": auroc[k][i, j]}
            for k in LEVELS for i, s in enumerate(SEEDS) for j, c in enumerate(CLASSES)]
    return pd.DataFrame(rows)


def chance_level_model(rng: np.random.Generator) -> pd.DataFrame:
    """Dense AP high for rare classes relative to their prevalence (rare classes: a larger
    AP_0 / prevalence ratio, as on NIH-CXR-LT), every class losing the same share of its
    above-chance AP down to chance at 95%: AP_95 = prevalence (+ symmetric noise), AUROC_95 ~ 0.5."""
    s, c = len(SEEDS), len(CLASSES)
    ap0 = np.clip(PREVALENCE + rng.uniform(0.3, 0.5, (s, c)), 0, 1)
    keep = {0.0: 1.0, 0.5: 0.9, 0.9: 0.4, 0.95: 0.0}
    noise = lambda scale: rng.normal(0, scale, (s, c))  # noqa: E731
    ap = {k: PREVALENCE + f * (ap0 - PREVALENCE) + (noise(0.002) if k == 0.95 else 0) for k, f in keep.items()}
    auc0 = rng.uniform(0.85, 0.95, (s, c))
    auroc = {k: 0.5 + f * (auc0 - 0.5) + (noise(0.01) if k == 0.95 else 0) for k, f in keep.items()}
    return table(ap, auroc)


def analyse(per_class: pd.DataFrame, labels: pd.DataFrame | None = None, counts: pd.Series = COUNTS):
    curves = forgetting.forgettability_curves(forgetting.relative_change(per_class), CLASSES)
    raw = forgetting.dap_at(curves, 0.95)
    labels = make_labels(PREVALENCE) if labels is None else labels
    return cc.analyse(per_class, labels, counts, CLASSES, raw, 0.2, 0.95), raw


def test_chance_level_model_shows_the_raw_artefact_but_no_chance_corrected_effect():
    """(a) The pruned model at chance: the paper's dAP@95 correlates with frequency by
    construction; the chance-corrected statistics do not, over many draws."""
    rng = np.random.default_rng(0)
    raw_rho, cc_p_side, roc_p_side = [], [], []
    for _ in range(40):
        res, raw = analyse(chance_level_model(rng))
        raw_rho.append(forgetting.correlate_with_frequency(raw, COUNTS).rho)
        assert res.included == CLASSES  # every class was learned
        np.testing.assert_allclose(res.ap.at, 0.0, atol=0.05)  # retained ~0: down to chance
        keys = cc.summary_keys(res)
        cc_p_side.append(keys["dap95_chance_corrected_rho"] > 0 and keys["dap95_chance_corrected_rho_p"] < 0.05)
        roc_p_side.append(keys["dauroc95_rho"] > 0 and keys["dauroc95_rho_p"] < 0.05)
    # The raw statistic "reproduces" the finding every time: the regression this test would catch.
    assert min(raw_rho) > 0.9
    # Two-sided 5% test: ~2.5% of null draws land on the paper's side; 40 draws allow a few.
    assert np.mean(cc_p_side) <= 0.1 and np.mean(roc_p_side) <= 0.1


def test_planted_effect_is_detected():
    """(b) Rare classes keep less of their above-chance AP and AUROC at 95%."""
    rng = np.random.default_rng(1)
    z = (np.log(COUNTS) - np.log(COUNTS).min()).to_numpy() / np.ptp(np.log(COUNTS))
    s, c = len(SEEDS), len(CLASSES)
    ap0 = np.clip(PREVALENCE + rng.uniform(0.3, 0.5, (s, c)), 0, 1)
    auc0 = rng.uniform(0.85, 0.95, (s, c))
    keep = {0.0: np.ones(c), 0.5: np.ones(c), 0.9: 0.2 + 0.7 * z, 0.95: 0.05 + 0.6 * z}
    per_class = table({k: PREVALENCE + f * (ap0 - PREVALENCE) for k, f in keep.items()},
                      {k: 0.5 + f * (auc0 - 0.5) for k, f in keep.items()})
    res, _ = analyse(per_class)
    keys = cc.summary_keys(res)
    for name in ("dap95_chance_corrected", "dauroc95"):
        assert keys[f"{name}_rho"] == pytest.approx(1.0) and keys[f"{name}_rho_p"] < 1e-3
        assert keys[f"{name}_n"] == len(CLASSES)
    np.testing.assert_allclose(res.ap.at.to_numpy(), 0.05 + 0.6 * z, atol=1e-9)
    # The first drop (retained below 0.8) comes at 0.9 for the classes that keep less than 0.8 there.
    assert (res.ap.first_drop[0.2 + 0.7 * z < 0.8] == 0.9).all()


def test_half_life_level_reads_forgetting_where_the_median_class_keeps_half():
    """``dauroc_half``: every class at chance at 95% (noise only) and a graded loss at 90%, where
    the median class keeps 0.1 + 0.6 * 0.5 = 0.4 of its AUROC lift: the level read is 90%, the
    lowest with a median at most one half, and the planted effect is found there."""
    rng = np.random.default_rng(2)
    z = (np.log(COUNTS) - np.log(COUNTS).min()).to_numpy() / np.ptp(np.log(COUNTS))
    s, c = len(SEEDS), len(CLASSES)
    ap0 = np.clip(PREVALENCE + rng.uniform(0.3, 0.5, (s, c)), 0, 1)
    auc0 = rng.uniform(0.85, 0.95, (s, c))
    keep = {0.0: np.ones(c), 0.5: 0.9 + 0.1 * z, 0.9: 0.1 + 0.6 * z, 0.95: np.zeros(c)}
    noise = {k: (rng.normal(0, 0.01, (s, c)) if k == 0.95 else 0.0) for k in keep}
    per_class = table({k: PREVALENCE + f * (ap0 - PREVALENCE) for k, f in keep.items()},
                      {k: 0.5 + f * (auc0 - 0.5) + noise[k] for k, f in keep.items()})
    res, _ = analyse(per_class)
    keys = cc.summary_keys(res)
    assert res.roc.half_level == keys["dauroc_half_level"] == 0.9  # median of 0.1 + 0.6 z is 0.4 there
    np.testing.assert_allclose(res.roc.half.to_numpy(), 0.1 + 0.6 * z, rtol=1e-9)
    oracle = stats.spearmanr(res.roc.half - 1, np.log(COUNTS))
    assert keys["dauroc_half_rho"] == pytest.approx(oracle.statistic) == pytest.approx(1.0)
    assert keys["dauroc_half_rho_p"] == pytest.approx(oracle.pvalue)
    # At 95% the same run is noise around chance: the paper's level shows nothing there.
    assert abs(keys["dauroc95_rho"]) < 0.9


def test_half_life_level_does_not_depend_on_which_class_has_which_count():
    """The level is a function of the set of curves (the permutation null holds at it): shuffling
    the train counts over the classes moves the correlation, never the level."""
    rng = np.random.default_rng(3)
    per_class = chance_level_model(rng)
    levels = set()
    for k in range(5):
        counts = pd.Series(rng.permutation(COUNTS.to_numpy()), index=CLASSES)
        res, _ = analyse(per_class, counts=counts)
        levels.add(res.roc.half_level)
    assert len(levels) == 1


def test_half_life_level_without_half_lost_is_the_highest_level():
    curves = pd.DataFrame({"a": [-0.1, -0.2], "b": [-0.1, -0.4], "c": [np.nan, -0.3]}, index=[0.5, 0.9])
    assert cc.half_level(curves, ["a", "b", "c"]) == 0.9
    assert cc.half_level(curves.assign(b=[-0.6, -0.9], c=[-0.7, -0.9]), ["a", "b", "c"]) == 0.5
    assert cc.half_level(curves.assign(b=[-0.6, -0.9], c=[-0.7, -0.9]), ["a"]) == 0.9
    assert math.isnan(cc.half_level(curves, []))


def test_unlearned_and_undefined_classes_are_left_out_and_listed():
    """(c) A class the dense model never learned (AUROC interval contains 0.5), one whose dense
    AP is at chance in a seed, and one without training positives: each excluded with its reason."""
    rng = np.random.default_rng(2)
    per_class = chance_level_model(rng)
    dense = per_class["level"] == 0.0
    # c00 has round(PREVALENCE[0] * N_TEST) = 5 test positives: AUROC 0.7 cannot be told from 0.5.
    per_class.loc[dense & (per_class["class_name"] == "c00"), "auroc"] = 0.7
    # c05: learned (AUROC 0.9) but its dense AP is at chance level in seed 1.
    per_class.loc[dense & (per_class["class_name"] == "c05") & (per_class["seed"] == 1), "ap"] = PREVALENCE[5]
    counts = COUNTS.copy()
    counts["c07"] = 0
    res, raw = analyse(per_class, counts=counts)
    assert res.excluded == {"c00": cc.NOT_LEARNED,
                            "c05": "dense AP at or below chance (test prevalence) in 1 of 3 seeds: retained AP undefined",
                            "c07": cc.NO_TRAIN}
    assert res.included == [c for c in CLASSES if c not in ("c00", "c05", "c07")]
    assert cc.summary_keys(res)["chance_corrected_n_classes"] == len(CLASSES) - 3
    listed = cc.excluded_classes(res, {"dap95": forgetting.correlate_with_frequency(raw, counts)}, counts, 0.2,
                                 CLASSES)
    by_class = {row["class"]: row for row in listed}
    assert set(by_class) == {"c00", "c05", "c07"}
    assert by_class["c00"]["reason"] == cc.NOT_LEARNED
    assert by_class["c00"]["statistics"] == list(cc.STATISTICS)  # not in the paper's dap95: the paper kept it
    assert by_class["c07"]["statistics"] == ["dap95", *cc.STATISTICS]  # ln(0): out of every correlation
    for name in ("dap95_chance_corrected", "dauroc95", "dap95_same_classes"):
        assert cc.summary_keys(res)[f"{name}_n"] == len(CLASSES) - 3
    # The interval by hand (Hanley & McNeil): c00 with 5 positives among N_TEST images.
    p = int(round(PREVALENCE[0] * N_TEST))
    n = N_TEST - p
    assert p == 5
    a = 0.7
    var = (a * (1 - a) + (p - 1) * (a / (2 - a) - a * a) + (n - 1) * (2 * a * a / (1 + a) - a * a)) / (p * n)
    assert res.auroc.at["c00", "dense_auroc_lo"] == pytest.approx(a - stats.norm.ppf(0.975) * math.sqrt(var))


def test_auroc_interval_at_one_half_is_the_mann_whitney_null():
    """At AUROC 0.5 the Hanley-McNeil variance equals the Mann-Whitney null variance, so the
    screen is the two-sided rank test there."""
    for p, n in ((3, 500), (40, 2000), (700, 700)):
        se = cc.hanley_mcneil_se(np.array(0.5), np.array(p), np.array(n))
        assert se ** 2 == pytest.approx((p + n + 1) / (12 * p * n), rel=1e-12)


def test_random_scores_have_prevalence_as_ap():
    """(d) Oracle: scikit-learn's AP of a score without information is the prevalence (exactly
    for a constant score; on average for random scores, up to the finite-sample excess the
    module docstring gives, which vanishes as positives are added)."""
    rng = np.random.default_rng(3)
    y = np.zeros(4000, dtype=np.int8)
    y[:800] = 1  # prevalence 0.2
    labels = pd.DataFrame({"A": y})
    assert cc.chance_levels(labels, ["A"])["A"] == 0.2
    assert average_precision_score(y, np.zeros(len(y))) == pytest.approx(0.2, abs=1e-15)
    mean_ap = np.mean([average_precision_score(y, rng.random(len(y))) for _ in range(200)])
    assert mean_ap == pytest.approx(0.2, abs=0.003)
    # With few positives the excess is real: (P-1)/(N-1) + (N-P)/(N-1) H_N / N.
    few = np.zeros(300, dtype=np.int8)
    few[:3] = 1
    n, p = len(few), 3
    expected = (p - 1) / (n - 1) + (n - p) / (n - 1) * np.sum(1 / np.arange(1, n + 1)) / n
    # (20,000 draws at once: cxrprune's AP equals scikit-learn's column by column, tests/test_metrics.py)
    mean_few = average_precision(np.repeat(few[:, None], 20_000, axis=1), rng.random((n, 20_000))).mean()
    assert mean_few == pytest.approx(expected, rel=0.02) and mean_few > 2 * p / n


def test_relative_ap_against_chance_is_undefined_without_lift():
    got = forgetting.relative_ap(np.array([0.3, 0.1, 0.2]), np.array([0.5, 0.1, 0.05]), np.array([0.1, 0.1, 0.1]))
    assert got[0] == pytest.approx((0.3 - 0.5) / (0.5 - 0.1)) and np.isnan(got[1:]).all()
    with pytest.raises(DataError, match="no chance level"):
        forgetting.relative_change(chance_level_model(np.random.default_rng(5)), "l1", pd.Series({"c00": 0.1}))


def test_chance_corrected_intervals_cover_only_included_classes():
    """The resampled statistic leaves the excluded classes out: changing them changes nothing."""
    rng = np.random.default_rng(6)
    b = 40
    labels = make_labels(PREVALENCE, 400).assign(image_id=[f"i{i}" for i in range(400)])
    prev = labels[CLASSES].mean().to_numpy()
    ap0 = prev + rng.uniform(0.3, 0.5, (len(SEEDS), 1, b, len(CLASSES)))
    share = np.array([1.0, 0.9, 0.4, 0.05])[None, :, None, None] * np.linspace(0.5, 1, len(CLASSES))
    ap = (prev + share * (ap0 - prev)).astype(np.float32)[:, None]  # (S, M, L, B, C)
    res = uncertainty.APResamples(list(SEEDS), ["l1"], np.array(LEVELS), CLASSES, ap, b, 0, 0.95)
    included = CLASSES[2:]
    got = uncertainty.chance_corrected_intervals(res, COUNTS, labels, included, 0.2, 0.95)
    assert set(got) == {f"{s}_chance_corrected_{c}_ci" for s in ("first_drop", "dap95") for c in ("r", "rho")}
    lo, hi = got["dap95_chance_corrected_rho_ci"]
    assert lo <= hi and hi > 0.5  # retained share rises with frequency here
    ap[:, :, :, :, :2] = rng.random(ap[:, :, :, :, :2].shape)
    assert uncertainty.chance_corrected_intervals(res, COUNTS, labels, included, 0.2, 0.95) == got


def scored_chance_model(rng: np.random.Generator, n: int = 761) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real scores, as the committed synthetic run has them: test prevalence 1-25% with 8 to
    190 positives in ``n`` images, binormal dense scores (AUROC 0.8-0.95, whatever the
    frequency), and at 95% no information left: the common classes collapse to one constant
    output, the rare ones give random distinct scores."""
    prev = np.geomspace(0.0105, 0.25, len(CLASSES))
    y = np.zeros((n, len(CLASSES)), dtype=np.int8)
    for j, p in enumerate(prev):
        y[rng.choice(n, int(round(p * n)), replace=False), j] = 1
    d0 = np.sqrt(2) * stats.norm.ppf(rng.uniform(0.8, 0.95, len(CLASSES)))
    rows = []
    for s in SEEDS:
        for k in (0.0, 0.95):
            scores = d0 * y + rng.standard_normal(y.shape) if k == 0.0 else rng.random(y.shape)
            if k == 0.95:
                scores[:, prev > 0.04] = 0.5
            m = classification_metrics(y, scores)
            rows += [{"seed": s, "method": "l1", "level": k, "class_name": c, "ap": a, "auroc": u}
                     for c, a, u in zip(CLASSES, m.ap, m.auroc)]
    return pd.DataFrame(rows), pd.DataFrame(y, columns=CLASSES)


def test_retained_auroc_stays_calibrated_where_retained_ap_does_not():
    """Why ``dauroc95`` is reported beside ``dap95_chance_corrected`` (module docstring): with
    few test positives a random ranking's AP exceeds the prevalence, so at chance the rare
    classes keep a retained AP above 0 while the collapsed common ones sit at exactly 0, and the
    AP-based rho leans to "common classes forgotten more". AUROC's chance level is 0.5 whatever
    the prevalence and ties: its rho stays noise."""
    rng = np.random.default_rng(7)
    ap_rho, roc_rho, roc_significant = [], [], []
    for _ in range(30):
        per_class, labels = scored_chance_model(rng)
        curves = forgetting.forgettability_curves(forgetting.relative_change(per_class), CLASSES)
        res = cc.analyse(per_class, labels, COUNTS, CLASSES, forgetting.dap_at(curves, 0.95), 0.2, 0.95)
        keys = cc.summary_keys(res)
        ap_rho.append(keys["dap95_chance_corrected_rho"])
        roc_rho.append(keys["dauroc95_rho"])
        roc_significant.append(keys["dauroc95_rho_p"] < 0.05)
    assert np.median(ap_rho) < -0.3  # the AP-based statistic's known lean (measured -0.49; if it goes, update the docs)
    assert abs(np.median(roc_rho)) < 0.15  # no lean (measured 0.06)
    # Nominal 5%: the collapsed classes' ties and the rare classes' larger noise inflate it
    # (measured 17% here, 9% without collapsed classes): noted in the module docstring.
    assert np.mean(roc_significant) <= 0.3


def test_each_resample_is_measured_against_its_own_prevalence():
    """A resample whose AP at 95% equals its own test prevalence keeps exactly nothing, in every
    class: the resampled values are all -1 and no correlation is defined. Against the full
    sample's prevalence they would vary with each resample's draw of positives."""
    b = 30
    labels = make_labels(PREVALENCE, 400).assign(image_id=[f"i{i}" for i in range(400)])
    w = uncertainty.image_weights(labels, b, 0)
    own = (w.T.astype(np.float64) @ labels[CLASSES].to_numpy(np.float64)) / w.sum(axis=0)[:, None]  # (B, C)
    lift = np.linspace(0.2, 0.6, len(CLASSES))
    ap = np.stack([own + lift, own + 0.5 * lift, own + 0.1 * lift, own])  # (L, B, C)
    ap = np.broadcast_to(ap, (len(SEEDS), 1, *ap.shape)).astype(np.float64)
    res = uncertainty.APResamples(list(SEEDS), ["l1"], np.array(LEVELS), CLASSES, ap, b, 0, 0.95)
    got = uncertainty.chance_corrected_intervals(res, COUNTS, labels, CLASSES, 0.2, 0.95)
    assert got["dap95_chance_corrected_rho_ci"] == [None, None]
    _, curves = uncertainty.curve_resamples(res, chance=own)
    np.testing.assert_allclose(curves[-1], -1.0, atol=1e-12)
