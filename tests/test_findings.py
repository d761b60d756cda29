"""The findings report: each verdict rule on hand-made measurements, and the report's
numbers parsed back from the markdown against the metrics files they come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrprune.analysis import findings as fd
from cxrprune.analysis import report
from cxrprune.analysis.findings import Measurement
from cxrprune.core.layout import Layout

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
    # One-sided p (paper's direction) is ~1 on the other side: the interval decides there.
    (CLAIM["pie_low_quality"], Measurement(0.05, [0.016, 0.089], 0.99, one_sided=True), fd.OPPOSITE),
    (CLAIM["pie_low_quality"], Measurement(0.05, [-0.01, 0.089], 0.99, one_sided=True), fd.NOT_REPRODUCED),
    (CLAIM["pie_low_quality"], Measurement(0.05, [0.016, 0.089], 0.99), fd.NOT_REPRODUCED),  # two-sided p rules
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
    """The committed default run's metrics, with intervals added by hand where that run predates them."""
    d = ROOT / "metrics/synthetic"
    summary = json.loads((d / "summary.json").read_text())
    evaluation = json.loads((d / "evaluate.json").read_text())
    reader = json.loads((d / "reader.json").read_text())
    summary["forgettability"].setdefault("dap95_rho_ci", [0.21, 0.83])
    summary["fcd"].setdefault("iou_rho_ci", [-0.37, -0.08])
    summary["pie"].setdefault("ratio_3plus_findings_ci", [1.43, 5.25])
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
    same(by_key["safe_sparsity"]["value [95% CI]"], evaluation["max_safe_sparsity"])
    same(by_key["rare_forgotten_earlier"]["value [95% CI]"], f["first_drop_rho"])
    same(by_key["rare_forgotten_more"]["value [95% CI]"], f["dap95_rho"], f["dap95_rho_ci"])
    assert float(by_key["rare_forgotten_more"]["p"]) == pytest.approx(f["dap95_rho_p"], rel=5e-3)
    same(by_key["fcd_frequency"]["value [95% CI]"], c["freq_rho"])
    same(by_key["fcd_cooccurrence"]["value [95% CI]"], c["iou_rho"], c["iou_rho_ci"])
    same(by_key["pie_3plus"]["value [95% CI]"], p["ratio_3plus_findings"], p["ratio_3plus_findings_ci"])
    assert float(by_key["pie_3plus"]["p"]) == pytest.approx(p["ratio_3plus_p"], rel=5e-3)
    same(by_key["pie_label_noise"]["value [95% CI]"], p["ratio_flipped_label"])
    q = reader["pooled"]["agree"]
    same(by_key["reader_label_noise"]["value [95% CI]"], q["pie_mean"] - q["non_pie_mean"])
    assert float(by_key["reader_label_noise"]["p"]) == pytest.approx(q["kruskal_p"], rel=5e-3)
    for row, finding in zip(table, rows, strict=True):
        assert row["verdict"] == f"**{finding.verdict}**"
    assert "Calibration, not replication" in text
    # Figures are linked relative to reports/synthetic/, where they are found.
    assert "](../../plots/synthetic/figures/forgettability_curves.png)" in text


def test_verdicts_of_the_committed_default_follow_from_its_numbers():
    """Three verdicts of the committed default, re-derived here from its numbers by the rules
    (whichever way the numbers fall, so the test holds for any committed run)."""
    summary, evaluation, reader = _metrics()
    v = {f.claim.key: f.verdict for f in fd.assess(summary, evaluation, reader, 0.05)}
    f, pie = summary["forgettability"], summary["pie"]
    # dAP@95 vs frequency: the paper's direction is rho > 0.
    rho, p, (lo, hi) = f["dap95_rho"], f["dap95_rho_p"], f["dap95_rho_ci"]
    if rho > 0:
        assert v["rare_forgotten_more"] == (fd.REPRODUCED if p < 0.05 and lo > 0 else fd.SAME_DIRECTION)
    else:
        assert v["rare_forgotten_more"] == (fd.OPPOSITE if hi < 0 else fd.NOT_REPRODUCED)
    # Flipped labels among PIEs: the paper's direction is a ratio above 1; a ratio below 1 cannot
    # be shown by the one-sided p, so its interval decides between opposite and not reproduced.
    ratio, p, (lo, hi) = pie["ratio_flipped_label"], pie["flipped_p"], pie["ratio_flipped_label_ci"]
    if ratio > 1:
        assert v["pie_label_noise"] == (fd.REPRODUCED if p < 0.05 and lo > 1 else fd.SAME_DIRECTION)
    else:
        assert v["pie_label_noise"] == (fd.OPPOSITE if hi < 1 else fd.NOT_REPRODUCED)
    # The largest safe sparsity against the paper's 60-65% band.
    assert v["safe_sparsity"] == (fd.REPRODUCED if evaluation["max_safe_sparsity"] >= 0.6 else fd.NOT_REPRODUCED)
