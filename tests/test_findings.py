"""The findings report: each verdict rule on hand-made measurements, the Holm adjustment
against a textbook computation, and the report's numbers parsed back from the markdown
against the metrics files they come from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrprune.analysis import fcd, pie_enrichment, report
from cxrprune.analysis import findings as fd
from cxrprune.analysis.findings import Measurement
from cxrprune.core.layout import Layout
from cxrprune.reader.stats import summarize

ROOT = Path(__file__).resolve().parents[1]
CLAIM = {c.key: c for c in fd.CLAIMS}
UP = CLAIM["rare_forgotten_more"]  # direction +1, null 0
DOWN = CLAIM["fcd_cooccurrence"]  # direction -1, null 0
RATIO = CLAIM["pie_3plus"]  # direction +1, null 1


@pytest.mark.parametrize("claim, m, expected", [
    (UP, Measurement(0.6, [0.3, 0.8], 0.001), fd.REPRODUCED),
    (UP, Measurement(0.6, None, 0.001), fd.REPRODUCED),  # no interval: p alone
    (UP, Measurement(0.6, [0.3, 0.8], None), fd.REPRODUCED),  # no p: interval alone
    (UP, Measurement(0.3, [-0.1, 0.6], 0.01), fd.SAME_DIRECTION),  # p small but the interval holds 0
    (UP, Measurement(0.3, [0.1, 0.6], 0.2), fd.SAME_DIRECTION),  # interval clear but p large
    (UP, Measurement(-0.5, [-0.8, -0.2], 0.01), fd.OPPOSITE),
    (UP, Measurement(-0.1, [-0.4, 0.2], 0.6), fd.NOT_REPRODUCED),
    (UP, Measurement(0.0, [-0.2, 0.2], 0.9), fd.NOT_REPRODUCED),  # exactly the null
    (UP, Measurement(None), fd.NOT_MEASURED),
    (UP, Measurement(0.5), fd.SAME_DIRECTION),  # a value with neither p nor interval is no evidence
    (DOWN, Measurement(-0.4, [-0.6, -0.2], 0.002), fd.REPRODUCED),
    (DOWN, Measurement(0.4, [0.2, 0.6], 0.002), fd.OPPOSITE),
    (RATIO, Measurement(2.5, [1.4, 4.0], 0.006), fd.REPRODUCED),
    (RATIO, Measurement(0.56, [0.1, 1.5], 0.84), fd.NOT_REPRODUCED),
    (RATIO, Measurement(1.5, [0.9, 2.8], 0.09), fd.SAME_DIRECTION),
    # A one-sided p (paper's direction) cannot show the other side: never "opposite", whatever the interval.
    (CLAIM["pie_low_quality"], Measurement(0.05, [0.016, 0.089], 0.99, one_sided=True), fd.NOT_REPRODUCED),
    (CLAIM["pie_low_quality"], Measurement(0.05, [0.016, 0.089], 1e-6, one_sided=True), fd.NOT_REPRODUCED),
    (CLAIM["pie_low_quality"], Measurement(0.05, [-0.01, 0.089], 0.99, one_sided=True), fd.NOT_REPRODUCED),
    (CLAIM["pie_low_quality"], Measurement(-0.05, [-0.09, -0.01], 0.001, one_sided=True), fd.REPRODUCED),
    (CLAIM["pie_low_quality"], Measurement(0.05, [0.016, 0.089], 0.99), fd.NOT_REPRODUCED),  # two-sided p rules
    (UP, Measurement(-0.5, [-0.8, -0.2], None), fd.OPPOSITE),  # no p: the two-sided interval is the test
    # The verdict uses the Holm-adjusted p where there is one.
    (UP, Measurement(0.6, [0.3, 0.8], 0.01, p_holm=0.12), fd.SAME_DIRECTION),
    (UP, Measurement(-0.5, [-0.8, -0.2], 0.01, p_holm=0.12), fd.NOT_REPRODUCED),
    (UP, Measurement(0.6, [0.3, 0.8], 0.01, p_holm=0.04), fd.REPRODUCED),
    # A one-point interval states no uncertainty: not estimable, whatever the p-value.
    (CLAIM["pie_label_noise"], Measurement(0.0, [0.0, 0.0], 1.0, one_sided=True), fd.NOT_ESTIMABLE),
    (UP, Measurement(0.6, [0.6, 0.6], 0.001), fd.NOT_ESTIMABLE),
    (UP, Measurement(None, [0.0, 0.0], 0.5), fd.NOT_MEASURED),
    # Read against the measurement's own null (random PIEs' mean rho), not the claim's 0.
    (CLAIM["pie_rare"], Measurement(0.05, None, 0.01, one_sided=True, null=0.12), fd.REPRODUCED),
    (CLAIM["pie_rare"], Measurement(-0.05, None, 0.3, one_sided=True, null=0.12), fd.SAME_DIRECTION),
    (CLAIM["pie_rare"], Measurement(0.3, None, 0.97, one_sided=True, null=0.12), fd.NOT_REPRODUCED),
])
def test_direction_rules(claim, m, expected):
    assert fd.verdict(claim, m, alpha=0.05) == expected


@pytest.mark.parametrize("safe, extra, expected", [
    (0.65, {}, fd.REPRODUCED), (0.75, {}, fd.REPRODUCED), (0.6, {}, fd.REPRODUCED),
    (0.55, {}, fd.NOT_REPRODUCED), (None, {}, fd.NOT_MEASURED), (0.9, {"no_power": True}, fd.NOT_MEASURED),
])
def test_safe_sparsity_threshold_rule(safe, extra, expected):
    assert fd.verdict(CLAIM["safe_sparsity"], Measurement(safe, extra=extra), 0.05) == expected


def _metrics() -> tuple[dict, dict, dict]:
    """The committed default run's metrics, brought up to date by hand where that run predates
    a key: intervals, the Mantel p-values (recomputed from the committed FCD pairs), the
    image-level reader tests (recomputed from the committed ratings) and a made-up rare-class
    enrichment (its inputs, the prepared labels, are not committed)."""
    d = ROOT / "metrics/synthetic"
    summary = json.loads((d / "summary.json").read_text())
    evaluation = json.loads((d / "evaluate.json").read_text())
    reader = json.loads((d / "reader.json").read_text())
    summary["forgettability"].setdefault("dap95_rho_ci", [0.21, 0.83])
    summary["fcd"].setdefault("iou_rho_ci", [-0.37, -0.08])
    summary["pie"].setdefault("ratio_3plus_findings_ci", [1.43, 5.25])
    if "p_method" not in summary["fcd"]:
        t = fcd.fcd_correlations(pd.read_csv(ROOT / "plots/synthetic/fcd_pairs.csv"))
        summary["fcd"].update(freq_p=t.freq.p_r, freq_rho_p=t.freq.p_rho, iou_p=t.iou.p_r, iou_rho_p=t.iou.p_rho,
                              freq_given_iou_rho=t.freq_given_iou_rho, freq_given_iou_rho_p=t.freq_given_iou_p,
                              p_method=t.p_method)
    for key, value in (("class_enrichment_rho", -0.2), ("class_enrichment_p", 0.04),
                       ("class_enrichment_null_mean_rho", 0.1)):
        summary["pie"].setdefault(key, value)
    evaluation.setdefault("max_noninferior_sparsity", 0.6)
    evaluation.setdefault("margin", 0.05)
    if "p" not in reader["pooled"]["agree"]:
        reader["pooled"] = summarize(pd.read_csv(d / "reader_answers.csv"))["pooled"]
    return summary, evaluation, reader


def test_report_numbers_equal_the_metrics_files():
    summary, evaluation, reader = _metrics()
    rows = fd.assess(summary, evaluation, reader, 0.05)
    text = report.render(rows, name="synthetic", synthetic=True, params={"train.arch": "resnet10"}, alpha=0.05,
                         report_path=Layout("synthetic").findings_md, layout=Layout("synthetic"))
    table = report.parse_table(text)
    assert [r["#"] for r in table] == [str(i) for i in range(1, len(fd.CLAIMS) + 1)]
    by_key = {c.key: row for c, row in zip(fd.CLAIMS, table, strict=True)}

    def same(cell: str, value, ci=None):
        got, got_ci = report.parse_value(cell)
        assert got == pytest.approx(value, rel=5e-3)
        if ci is not None:
            assert got_ci == pytest.approx(ci, rel=5e-3)

    f, c, p = summary["forgettability"], summary["fcd"], summary["pie"]
    same(by_key["safe_sparsity"]["value [95% CI]"], evaluation["max_noninferior_sparsity"])
    assert f"no significant drop: {report.fmt(evaluation['max_safe_sparsity'])}" in by_key["safe_sparsity"][
        "this run: statistic"]  # the paper's rule beside it
    same(by_key["rare_forgotten_earlier"]["value [95% CI]"], f["first_drop_auroc_rho"])
    same(by_key["rare_forgotten_more"]["value [95% CI]"], f["dauroc_half_rho"])
    assert float(by_key["rare_forgotten_more"]["p"]) == pytest.approx(f["dauroc_half_rho_p"], rel=5e-3)
    # Read at the half-life level, with the level and the 95% value beside it.
    assert f"half-life level {f['dauroc_half_level']:.0%}" in by_key["rare_forgotten_more"]["this run: statistic"]
    assert f"at 95%: rho {report.fmt(f['dauroc95_rho'])}" in by_key["rare_forgotten_more"]["this run: statistic"]
    # The paper's statistic is printed beside the chance-corrected one.
    assert f"the paper's statistic: rho {report.fmt_value(f['dap95_rho'], f.get('dap95_rho_ci'))}" in \
        by_key["rare_forgotten_more"]["this run: statistic"]
    same(by_key["fcd_frequency"]["value [95% CI]"], c["auroc_freq_rho"])
    assert float(by_key["fcd_frequency"]["p"]) == pytest.approx(c["auroc_freq_rho_p"], rel=5e-3)
    same(by_key["fcd_cooccurrence"]["value [95% CI]"], c["auroc_iou_rho"])
    same(by_key["pie_rare"]["value [95% CI]"], p["class_enrichment_rho"])
    assert float(by_key["pie_rare"]["p"]) == pytest.approx(p["class_enrichment_p"], rel=5e-3)
    same(by_key["pie_3plus"]["value [95% CI]"], p["ratio_3plus_findings"], p["ratio_3plus_findings_ci"])
    assert float(by_key["pie_3plus"]["p"]) == pytest.approx(p["ratio_3plus_p"], rel=5e-3)
    same(by_key["pie_label_noise"]["value [95% CI]"], p["ratio_flipped_label"])
    q = reader["pooled"]["agree"]
    same(by_key["reader_label_noise"]["value [95% CI]"], q["rank_biserial"])  # the image-level test's effect size
    assert float(by_key["reader_label_noise"]["p"]) == pytest.approx(q["p"], rel=5e-3)
    for row, finding in zip(table, rows, strict=True):
        assert row["verdict"] == f"**{finding.verdict}**"
        assert row["p (Holm)"] == report.fmt_p(finding.measured.p_holm)
        assert row["cannot show"] == fd.cannot_show(finding.claim, finding.measured)
    assert by_key["safe_sparsity"]["p (Holm)"] == "n/a"  # outside the family: its p decides nothing here
    assert by_key["pie_3plus"]["cannot show"].startswith("one-sided p")
    assert "Calibration, not replication" in text
    # Figures are linked relative to reports/synthetic/, where they are found.
    assert "](../../plots/synthetic/figures/forgettability_curves.png)" in text


def textbook_holm(p: list[float]) -> list[float]:
    """Holm (1979) step by step: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_p_in_findings_json_is_the_textbook_adjustment():
    summary = {"forgettability": {"first_drop_auroc_rho": 0.5, "first_drop_auroc_rho_p": 0.004, "dauroc_half_rho": 0.6,
                                  "dauroc_half_rho_p": 0.03, "dap95_rho": -0.9, "dap95_rho_p": 1e-6},
               "fcd": {"auroc_freq_rho": 0.3, "auroc_freq_rho_p": 0.01, "auroc_iou_rho": -0.4, "auroc_iou_rho_p": 0.2},
               "pie": {"class_enrichment_rho": -0.5, "class_enrichment_p": 0.012, "class_enrichment_null_mean_rho": 0.1,
                       "ratio_3plus_findings": 2.0, "ratio_3plus_p": 0.0005}}
    evaluation = {"max_safe_sparsity": 0.7, "max_noninferior_sparsity": 0.7,
                  "noninferiority": [{"method": "l1", "sparsity": 0.65, "p": 0.002, "tested": True}]}
    reader = {"pooled": {"agree": {"rank_biserial": -0.3, "p": 0.02}}}
    rows = fd.assess(summary, evaluation, reader, 0.05)
    doc = report.document(rows, calibration=True, alpha=0.05)
    family = ["rare_forgotten_earlier", "rare_forgotten_more", "fcd_frequency", "fcd_cooccurrence", "pie_rare",
              "pie_3plus", "reader_label_noise"]
    raw = [0.004, 0.03, 0.01, 0.2, 0.012, 0.0005, 0.02]
    # Smallest first: 0.0005*7, 0.004*6, 0.01*5, 0.012*4 = 0.048 raised to 0.05 (monotone), 0.02*3,
    # 0.03*2, 0.2*1.
    expected = textbook_holm(raw)
    assert expected == pytest.approx([0.024, 0.06, 0.05, 0.2, 0.05, 0.0035, 0.06])
    assert doc["multiplicity"] == {"method": "holm", "m": 7}
    for key, p, adj in zip(family, raw, expected, strict=True):
        assert doc["findings"][key]["p"] == p
        assert doc["findings"][key]["p_holm"] == pytest.approx(adj, abs=1e-15)
    assert doc["findings"]["safe_sparsity"]["p"] == 0.002 and doc["findings"]["safe_sparsity"]["p_holm"] is None
    assert doc["findings"]["pie_label_noise"]["p_holm"] is None  # not measured: no p, not in the family
    v = {k: f["verdict"] for k, f in doc["findings"].items()}
    # Raw p < 0.05 but Holm p >= 0.05: no longer significant.
    assert v["fcd_frequency"] == v["rare_forgotten_more"] == v["pie_rare"] == fd.SAME_DIRECTION
    assert v["rare_forgotten_earlier"] == fd.REPRODUCED
    assert v["pie_3plus"] == fd.REPRODUCED and v["reader_label_noise"] == fd.SAME_DIRECTION
    assert v["pie_label_noise"] == fd.NOT_MEASURED


def test_random_pies_do_not_make_rare_classes_enriched():
    """PIEs drawn at random, independent of the labels: the analysis function's test is not
    significant and the finding is not reproduced, where the old statistic (log prevalence
    ratio over the classes that have a PIE) is strongly negative on the same data."""
    rng = np.random.default_rng(2)
    n, prevalence = 1500, np.geomspace(0.3, 0.003, 20)
    labels = (rng.random((n, 20)) < prevalence).astype(int)
    train_counts = np.round(prevalence * 20000)
    patients = np.repeat(np.arange(n // 2), 2).astype(str)
    classes = [f"c{i}" for i in range(20)]
    is_pie = np.zeros(n, dtype=bool)
    is_pie[rng.choice(n, 38, replace=False)] = True

    keys, enrichment = pie_enrichment.rare_class_enrichment(is_pie, labels, train_counts, patients, classes)
    assert keys["class_enrichment_p"] > 0.05
    assert keys["class_enrichment_n_classes"] == int((labels.sum(axis=0) > 0).sum())
    assert np.isfinite(enrichment).sum() == keys["class_enrichment_n_classes"]
    m = fd.measure({"pie": keys}, {}, None)["pie_rare"]
    assert fd.verdict(CLAIM["pie_rare"], m, 0.05) in (fd.SAME_DIRECTION, fd.NOT_REPRODUCED)

    with np.errstate(divide="ignore"):
        old = np.log(labels[is_pie].mean(axis=0) / labels[~is_pie].mean(axis=0))
    kept = np.isfinite(old)
    from scipy import stats
    assert stats.spearmanr(old[kept], np.log(train_counts[kept])).statistic < -0.4


def test_rare_class_enrichment_that_cannot_be_tested_says_why():
    labels = np.eye(4, dtype=int)[np.arange(40) % 4]
    keys, enrichment = pie_enrichment.rare_class_enrichment(np.zeros(40, bool), labels, [40, 30, 20, 10], None,
                                                            list("abcd"))
    assert np.isnan(keys["class_enrichment_rho"]) and np.isnan(enrichment).all()
    assert "flagged" in keys["class_enrichment_note"]
    assert fd.verdict(CLAIM["pie_rare"], fd.measure({"pie": keys}, {}, None)["pie_rare"], 0.05) == fd.NOT_MEASURED


def test_verdicts_of_the_committed_default_follow_from_its_numbers():
    """Three verdicts of the committed default, re-derived here from its numbers by the rules
    (whichever way the numbers fall, so the test holds for any committed run)."""
    summary, evaluation, reader = _metrics()
    found = {f.claim.key: f for f in fd.assess(summary, evaluation, reader, 0.05)}
    v = {k: f.verdict for k, f in found.items()}
    f, pie = summary["forgettability"], summary["pie"]
    # Retained AUROC at the half-life level vs frequency: the paper's direction is rho > 0; the
    # two-sided p (no interval: the resamples hold AP only) can show either side.
    rho = f["dauroc_half_rho"]
    p = found["rare_forgotten_more"].measured.p_holm
    assert p >= f["dauroc_half_rho_p"]
    if rho > 0:
        assert v["rare_forgotten_more"] == (fd.REPRODUCED if p < 0.05 else fd.SAME_DIRECTION)
    else:
        assert v["rare_forgotten_more"] == (fd.OPPOSITE if p < 0.05 else fd.NOT_REPRODUCED)
    # Flipped labels among PIEs: the paper's direction is a ratio above 1; the p is one-sided, so a
    # ratio below 1 is "not reproduced" whatever its interval, and a one-point interval is not estimable.
    ratio, (lo, hi) = pie["ratio_flipped_label"], pie["ratio_flipped_label_ci"]
    p = found["pie_label_noise"].measured.p_holm
    if lo == hi:
        assert v["pie_label_noise"] == fd.NOT_ESTIMABLE
    elif ratio > 1:
        assert v["pie_label_noise"] == (fd.REPRODUCED if p < 0.05 and lo > 1 else fd.SAME_DIRECTION)
    else:
        assert v["pie_label_noise"] == fd.NOT_REPRODUCED
    # The largest safe sparsity against the paper's 60-65% band.
    assert v["safe_sparsity"] == (fd.REPRODUCED if evaluation["max_noninferior_sparsity"] >= 0.6
                                  else fd.NOT_REPRODUCED)
    assert fd.OPPOSITE not in (v["pie_3plus"], v["pie_label_noise"], v["pie_low_quality"], v["pie_rare"])


def test_every_verdict_has_a_symbol_and_a_colour():
    from cxrprune.analysis import compare

    assert set(compare.SYMBOL) == set(compare.COLOR) == set(fd.VERDICTS)
    assert len(set(compare.SYMBOL.values())) == len(fd.VERDICTS)


def test_safe_sparsity_reads_non_inferiority_and_keeps_the_papers_rule_beside_it():
    evaluation = {"max_safe_sparsity": 0.7, "max_noninferior_sparsity": 0.5, "margin": 0.05,
                  "noninferiority": [{"method": "l1", "sparsity": 0.65, "p": 0.3, "tested": False, "mde": 0.08}]}
    m = fd.measure({}, evaluation, None)["safe_sparsity"]
    # The old rule calls 70% safe; non-inferiority shows 50% only: the verdict follows the latter.
    assert m.value == 0.5 and m.extra["paper_rule"] == 0.7
    assert m.p is None  # the sequence stopped below 65%: that level's p was never a test
    assert fd.verdict(CLAIM["safe_sparsity"], m, 0.05) == fd.NOT_REPRODUCED
    few = fd.measure({}, {"max_noninferior_sparsity": None,
                          "noninferiority_note": "non-inferiority not measured: 2 seeds"}, None)["safe_sparsity"]
    assert fd.verdict(CLAIM["safe_sparsity"], few, 0.05) == fd.NOT_MEASURED


@pytest.mark.parametrize("mechanisms, effect", [([], 1.0), (["frequency"], 1.0), (["label_noise", "quality"], 1.0),
                                                (["ambiguity", "mottle"], 1.0),
                                                (["frequency", "label_noise", "quality", "ambiguity"], 0.0)])
def test_report_says_per_finding_whether_the_generator_planted_it(mechanisms, effect):
    summary, evaluation, reader = _metrics()
    rows = fd.assess(summary, evaluation, reader, 0.05)
    text = report.render(rows, name="synthetic", synthetic=True, params={}, alpha=0.05,
                         report_path=Layout("synthetic").findings_md, layout=Layout("synthetic"),
                         planted=(mechanisms, effect))
    assert len(report.parse_table(text)) == len(fd.CLAIMS)  # the findings table still parses alone
    section = text.split("## What the generator planted", 1)[1]
    for i, claim in enumerate(fd.CLAIMS, 1):
        line = next(x for x in section.splitlines() if x.startswith(f"{i}. {claim.title}: "))
        planted = effect > 0 and bool(set(claim.routes) & set(mechanisms))
        assert ("**planted**" in line) == planted, line
    header = section.split("\n\n")[1]
    anything = effect > 0 and any(set(c.routes) & set(mechanisms) for c in fd.CLAIMS)
    assert ("negative control" in header) == (not anything), header
    real = report.render(rows, name="nih", synthetic=False, params={}, alpha=0.05,
                         report_path=Layout("nih").findings_md, layout=Layout("nih"))
    assert "What the generator planted" not in real
