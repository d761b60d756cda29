"""Bootstrap confidence intervals: AP per resample against scikit-learn, coverage of a
statistic with a known distribution, reproducibility, vectorised correlations against
scipy, and evaluate -> analyze with intervals on a tiny workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score
from test_analyze_stage import tiny_workspace

from cxrprune.analysis import bootstrap, uncertainty
from cxrprune.core import config
from cxrprune.stages import analyze, evaluate


def test_weighted_ap_equals_sklearn_on_each_resample_ties_included():
    rng = np.random.default_rng(0)
    n, c = 200, 4
    y = rng.random((n, c)) < np.array([0.03, 0.1, 0.3, 0.5])
    scores = np.round(rng.random((n, c)) + 0.3 * y, 1)  # few distinct values: many ties
    idx = bootstrap.resample_indices(n, 40, seed=3)
    ap = bootstrap.weighted_ap(y, scores, bootstrap.counts(idx, n))
    checked = 0
    for b in range(40):
        for j in range(c):
            yy, ss = y[idx[b], j], scores[idx[b], j]
            if yy.any():
                assert ap[b, j] == pytest.approx(average_precision_score(yy, ss), abs=1e-12)
                checked += 1
            else:
                assert np.isnan(ap[b, j])  # undefined, not sklearn's warning and 0
    assert checked > 100


def test_percentile_interval_covers_a_known_mean_at_the_nominal_rate():
    # x ~ N(mu, 1), n = 80: the true mean is known; count how often the 95% interval of the
    # sample mean covers it. The number of covering runs out of R is Binomial(R, ~0.95):
    # accept within 3 binomial standard deviations (the percentile bootstrap undercovers a
    # little at small n, well inside that band at n = 80).
    mu, n, runs, b = 2.0, 80, 400, 1000
    rng = np.random.default_rng(11)
    covered = 0
    for r in range(runs):
        x = rng.normal(mu, 1.0, n)
        w = bootstrap.resample_counts(n, b, seed=r)
        lo, hi = bootstrap.interval((x @ w) / n, 0.95)
        covered += lo <= mu <= hi
    sd = np.sqrt(0.95 * 0.05 / runs)
    assert abs(covered / runs - 0.95) <= 3 * sd, covered / runs


def test_percentile_interval_of_a_ratio_with_infinite_resamples_is_infinite_not_nan():
    # A PIE ratio's resample is +inf when no non-PIE carries the flag. The upper 2.5% of 1,000
    # resamples with 50 at +inf lies between two infinities: the bound is +inf (unbounded), not
    # NaN with a RuntimeWarning per call; finite columns equal numpy's linear quantile.
    import warnings
    rng = np.random.default_rng(5)
    finite = rng.lognormal(size=1000)
    ratio = finite.copy()
    ratio[rng.choice(1000, 50, replace=False)] = np.inf
    half_nan = finite.copy()
    half_nan[:500] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = bootstrap.percentile_ci(np.column_stack([finite, ratio, half_nan]))
    assert np.isinf(hi[1]) and hi[1] > 0
    assert lo[1] == pytest.approx(np.quantile(ratio[np.isfinite(ratio)].tolist() + [np.inf] * 50, 0.025))
    assert (lo[0], hi[0]) == pytest.approx(tuple(np.quantile(finite, [0.025, 0.975])))
    assert (lo[2], hi[2]) == pytest.approx(tuple(np.quantile(finite[500:], [0.025, 0.975])))
    assert bootstrap.interval(ratio)[1] is None  # JSON: an unbounded side is null


def test_same_seed_gives_identical_resamples_and_intervals():
    a = bootstrap.resample_counts(50, 300, seed=4)
    assert np.array_equal(a, bootstrap.resample_counts(50, 300, seed=4))
    assert not np.array_equal(a, bootstrap.resample_counts(50, 300, seed=5))
    assert a.shape == (50, 300) and (a.sum(axis=0) == 50).all()  # every resample has n images
    x = np.random.default_rng(0).random(50)
    assert bootstrap.interval(x @ a) == bootstrap.interval(x @ bootstrap.resample_counts(50, 300, seed=4))


def test_seeds_are_resampled_whenever_there_is_more_than_one():
    assert bootstrap.seed_resamples(1, 100, 0) is None  # one checkpoint: no seed variability to draw
    draws = bootstrap.seed_resamples(5, 100, 0)
    assert draws.shape == (100, 5) and draws.max() < 5 and len({tuple(d) for d in draws}) > 50


def test_cluster_counts_keep_each_patients_images_together():
    groups = np.array(["p3", "p1", "p3", "p2", "p1", "p3"])
    w = bootstrap.cluster_counts(groups, 400, seed=2)
    assert w.shape == (6, 400)
    for a, b in [(0, 2), (0, 5), (1, 4)]:  # images of one patient share its multiplicity
        assert np.array_equal(w[a], w[b])
    # Each resample draws 3 patients: the multiplicities of the three patients sum to 3.
    assert (w[0] + w[1] + w[3] == 3).all()
    assert np.array_equal(w, bootstrap.cluster_counts(groups, 400, seed=2))
    # One image per patient: the plain image bootstrap, draw for draw.
    ids = np.array([f"p{i}" for i in range(30)])
    assert np.array_equal(bootstrap.cluster_counts(ids, 50, seed=3), bootstrap.resample_counts(30, 50, seed=3))


def test_patient_bootstrap_covers_a_clustered_mean_where_the_image_bootstrap_does_not():
    # 60 patients x 5 images; a patient effect (SD 1) shared by its images and image noise SD
    # 0.5: the images are far from independent (intra-class correlation 0.8). The 95%
    # interval of the mean must cover the true mean ~95% of the time when patients are
    # resampled; resampling images ignores the clustering and covers far less often.
    n_pat, per, runs, b = 60, 5, 300, 500
    rng = np.random.default_rng(21)
    groups = np.repeat(np.arange(n_pat), per).astype(str)
    hit_patients = hit_images = 0
    for r in range(runs):
        x = np.repeat(rng.normal(0, 1.0, n_pat), per) + rng.normal(0, 0.5, n_pat * per)
        wp = bootstrap.cluster_counts(groups, b, seed=r)
        wi = bootstrap.resample_counts(len(x), b, seed=r)
        lo, hi = bootstrap.interval((x @ wp) / wp.sum(axis=0), 0.95)
        hit_patients += lo <= 0.0 <= hi
        lo, hi = bootstrap.interval((x @ wi) / len(x), 0.95)
        hit_images += lo <= 0.0 <= hi
    sd = np.sqrt(0.95 * 0.05 / runs)
    assert hit_patients / runs >= 0.95 - 3 * sd, hit_patients / runs
    assert hit_images / runs < 0.80, hit_images / runs  # the pseudo-replicated interval undercovers


def test_vectorised_correlations_equal_scipy_row_by_row():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 12))
    x[rng.random(x.shape) < 0.15] = np.nan  # e.g. first drop not reached
    x[:, 3] = x[:, 4]  # ties for the ranks
    y = rng.normal(size=12)
    r, rho = uncertainty.correlation_resamples(x, y)
    for i in range(30):
        ok = np.isfinite(x[i])
        assert r[i] == pytest.approx(stats.pearsonr(x[i, ok], y[ok]).statistic, abs=1e-12)
        assert rho[i] == pytest.approx(stats.spearmanr(x[i, ok], y[ok]).statistic, abs=1e-12)


@pytest.mark.slow
def test_evaluate_then_analyze_write_intervals(tmp_path, monkeypatch):
    params, root, *_ = tiny_workspace(tmp_path, monkeypatch)  # analyze's tiny workspace; evaluate recomputes its tables

    params = config.from_dict({**config.to_dict(params), "bootstrap": {"resamples": 200, "seed": 1, "level": 0.95},
                               "evaluate": {"test": "ttest", "correction": "holm", "alpha": 0.05,
                                            "f1_threshold": 0.5}})
    evaluate.run(params)
    first = (root / "data/bootstrap/tiny/ap_resamples.npz").read_bytes()
    ev = json.loads((root / "metrics/tiny/evaluate.json").read_text())
    lo, hi = ev["map_dense_ci"]
    assert lo <= ev["map_dense"] <= hi
    curve = pd.read_csv(root / "plots/tiny/map_vs_sparsity.csv")
    assert {"map_lo", "map_hi"} <= set(curve.columns) and (curve["map_lo"] <= curve["map_hi"]).all()
    assert ev["bootstrap"]["seeds_resampled"] is True and ev["bootstrap"]["resamples"] == 200
    assert ev["bootstrap"]["unit"] == "patients"

    analyze.run(params)
    summary = json.loads((root / "metrics/tiny/summary.json").read_text())
    for section, keys in {"forgettability": ["dap95_r", "dap95_rho"], "fcd": ["freq_r", "freq_rho", "iou_r", "iou_rho"],
                          "pie": ["ratio_3plus_findings", "ratio_flipped_label"]}.items():
        for key in keys:
            lo, hi = summary[section][f"{key}_ci"]
            assert lo <= hi
    bands = pd.read_csv(root / "plots/tiny/forgettability_curves.csv")
    assert {"rel_dap", "rel_dap_lo", "rel_dap_hi"} <= set(bands.columns)
    assert (bands["rel_dap_lo"] <= bands["rel_dap_hi"]).all()

    evaluate.run(params)  # same seed: byte-identical resamples
    assert (root / "data/bootstrap/tiny/ap_resamples.npz").read_bytes() == first


@pytest.mark.slow
def test_report_stage_numbers_equal_summary_json(tmp_path, monkeypatch):
    from cxrprune.analysis import report as render
    from cxrprune.stages import report

    params, root, *_ = tiny_workspace(tmp_path, monkeypatch)
    params = config.from_dict({**config.to_dict(params), "bootstrap": {"resamples": 200, "seed": 1, "level": 0.95}})
    evaluate.run(params)
    analyze.run(params)
    # reader-analyze's output of the committed default run stands in for this workspace's.
    committed = Path(__file__).resolve().parents[1] / "metrics/synthetic/reader.json"
    (root / "metrics/tiny/reader.json").write_text(committed.read_text())
    report.run(params)
    summary = json.loads((root / "metrics/tiny/summary.json").read_text())
    rows = render.parse_table((root / "reports/tiny/findings.md").read_text())
    doc = json.loads((root / "reports/tiny/findings.json").read_text())
    f, pie = summary["forgettability"], summary["pie"]
    value, ci = render.parse_value(rows[2]["value [95% CI]"])  # rare classes forgotten more: retained AUROC, no CI
    expected = f.get("dauroc95_rho")  # null where too few learned classes remain in this tiny workspace
    assert (value is None if expected is None else value == pytest.approx(expected, rel=5e-3)) and ci is None
    value, ci = render.parse_value(rows[6]["value [95% CI]"])  # PIEs enriched for 3+ findings: with its interval
    assert value == pytest.approx(pie["ratio_3plus_findings"], rel=5e-3)
    assert ci == pytest.approx(pie["ratio_3plus_findings_ci"], rel=5e-3)
    row = doc["findings"]["pie_3plus"]
    assert [row["ci_lo"], row["ci_hi"]] == pie["ratio_3plus_findings_ci"]
    assert doc["findings"]["pie_3plus"]["verdict"] == rows[6]["verdict"].strip("*")


def test_with_enough_seeds_each_resample_takes_the_median_over_its_drawn_seeds():
    rng = np.random.default_rng(5)
    s, l, b, c = bootstrap.MIN_SEEDS, 3, 50, 4
    ap = rng.random((s, 1, l, b, c)).astype(np.float32) * 0.5 + 0.4
    res = uncertainty.APResamples(list(range(s)), ["l1"], np.array([0.0, 0.5, 0.9]), list("abcd"), ap, b, 7, 0.95)
    draws = res.seed_draws()
    assert draws is not None
    levels, curves = uncertainty.curve_resamples(res)
    assert list(levels) == [0.5, 0.9]
    i, k, j = 17, 1, 2  # one resample, level 0.9, class c: recomputed by hand
    a = ap[:, 0, :, i, j].astype(np.float64)
    rel = (a[:, 2] - a[:, 0]) / (a[:, 0] + 1e-12)
    assert curves[k, i, j] == pytest.approx(np.median(rel[draws[i]]), abs=1e-12)
    maps = uncertainty.map_intervals(res)
    per_seed = ap[:, 0, 1, :, :].mean(axis=-1)  # (S, B) at level 0.5
    expected = np.quantile([np.median(per_seed[draws[r], r]) for r in range(b)], [0.025, 0.975])
    row = maps[(maps["method"] == "l1") & (maps["level"] == 0.5)].iloc[0]
    assert [row["map_lo"], row["map_hi"]] == pytest.approx(list(expected), abs=1e-6)


def test_pie_intervals_take_each_resamples_own_pie_set():
    """With one PIE set per resample (redrawn from its seeds), resample b's ratio is computed
    by hand from its own set and multiplicities; a fixed set gives the old design's ratios."""
    rng = np.random.default_rng(5)
    n, b = 120, 60
    w = bootstrap.resample_counts(n, b, 0)
    sets = rng.random((n, b)) < 0.2
    findings = rng.integers(0, 5, size=n)
    y = rng.random((n, 2)) < 0.3

    def by_hand(mask: np.ndarray) -> np.ndarray:
        flag = findings >= 3
        pie = [(w[:, j] * mask[:, j] * flag).sum() / (w[:, j] * mask[:, j]).sum() for j in range(b)]
        other = [(w[:, j] * ~mask[:, j] * flag).sum() / (w[:, j] * ~mask[:, j]).sum() for j in range(b)]
        return np.array(pie) / np.array(other)

    out, _ = uncertainty.pie_intervals(w, sets, y, findings, ["a", "b"], None, 0.95)
    assert out["ratio_3plus_findings_ci"] == pytest.approx(bootstrap.interval(by_hand(sets), 0.95))
    fixed, _ = uncertainty.pie_intervals(w, sets[:, 0], y, findings, ["a", "b"], None, 0.95)
    same = np.repeat(sets[:, :1], b, axis=1)
    assert fixed["ratio_3plus_findings_ci"] == pytest.approx(bootstrap.interval(by_hand(same), 0.95))
