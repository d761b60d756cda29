"""The README numbers are the committed outputs' numbers (benchmarks/readme_numbers.py).

Fails when a number in a numbers block of README.md, benchmarks/README.md or
docs/SCALEOUT.md differs from what metrics/synthetic, plots/synthetic or
benchmarks/results say; the fix is ``python benchmarks/readme_numbers.py --write``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrprune.analysis import findings as fd
from cxrprune.analysis import report
from cxrprune.core.atomic import json_clean
from cxrprune.core.layout import Layout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import readme_numbers as rn

EXPECTED = {"README.md": {"repro", "findings", "why", "benchmarks", "operating-points", "train-speed", "conv-grad", "gpu", "pie-answer",
                          "pie-cost", "intervention-answer", "intervention-cost", "compare", "validation",
                          "verdict-changes", "deployment", "calibration", "repro-trade", "pie-routes", "fcd-noise"},
            "benchmarks/README.md": {"benchmarks"},
            "docs/SCALEOUT.md": {"scaleout"}}


@pytest.mark.parametrize("doc", rn.DOCS)
def test_every_numbers_block_matches_the_committed_outputs(doc):
    text = (REPO / doc).read_text()
    assert {m.group(2) for m in rn.BLOCK.finditer(text)} == EXPECTED[doc], f"{doc}: numbers blocks missing"
    assert rn.stale(text, rn.Outputs(REPO)) == [], f"{doc}: run python benchmarks/readme_numbers.py --write"


@pytest.fixture
def outputs_copy(tmp_path):
    for rel in ("metrics/synthetic", "plots/synthetic", "benchmarks/results", "reports"):
        shutil.copytree(REPO / rel, tmp_path / rel, ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # the PIE study's weight
    return tmp_path


@pytest.fixture
def report_outputs(tmp_path):
    """The outputs the findings and why blocks read, written the way the stages write them: the
    committed default's metrics (brought up to date where that run predates a key, as in
    test_findings), findings.json from the report module, and the per-class plot tables."""
    from test_findings import _metrics

    summary, evaluation, reader = _metrics()
    rows = fd.assess(summary, evaluation, reader, 0.05)
    for rel in ("metrics/synthetic", "reports/synthetic", "plots/synthetic"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "metrics/synthetic/summary.json").write_text(json.dumps(summary))
    (tmp_path / "metrics/synthetic/reader.json").write_text(json.dumps({"n_readers": 3, "pooled": reader["pooled"]}))
    (tmp_path / "reports/synthetic/findings.json").write_text(
        json.dumps(json_clean(report.document(rows, calibration=True, alpha=0.05))))
    shutil.copy(REPO / "plots/synthetic/forgettability_curves.csv", tmp_path / "plots/synthetic")
    ratios = pd.read_csv(REPO / "plots/synthetic/pie_class_ratios.csv")
    if "enrichment" not in ratios:  # made up where the committed run predates it
        ratios["enrichment"] = np.linspace(1.0, -1.0, len(ratios))
    ratios.to_csv(tmp_path / "plots/synthetic/pie_class_ratios.csv", index=False)
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks/results/verdicts.json", tmp_path / "benchmarks/results")
    validation = json.loads((REPO / "benchmarks/results/verdicts.json").read_text())
    text = report.render(rows, name="synthetic", synthetic=True, params={}, alpha=0.05,
                         report_path=Layout("synthetic").findings_md, layout=Layout("synthetic"), validation=validation)
    return tmp_path, report.parse_table(text)


def test_findings_block_says_what_findings_md_says(report_outputs):
    root, md = report_outputs
    block = rn.findings(rn.Outputs(root))
    lines = [line for line in block.splitlines() if line.startswith("| ")][2:]
    assert len(lines) == len(fd.CLAIMS) == len(md)
    for line, claim, row in zip(lines, fd.CLAIMS, md, strict=True):
        cells = [c.strip().replace("\\|", "|") for c in line.strip()[2:-2].split(" | ")]
        assert cells == [row["finding"], row["paper"], claim.statistic, row["value [95% CI]"], row["p"],
                         row["p (Holm)"], row["verdict"], row["FPR / power (planted)"]]
        validated = claim.key in json.loads((REPO / "benchmarks/results/verdicts.json").read_text())["findings"]
        assert cells[-1].startswith("FPR ") if validated else cells[-1] == "not validated"
    assert md[-1]["FPR / power (planted)"] == "not validated"  # the reader rows: no planted readers
    doc = json.loads((root / "reports/synthetic/findings.json").read_text())
    assert f"Holm-adjusted over the {doc['multiplicity']['m']} findings with a p-value" in block


def test_findings_block_follows_findings_json_alone(report_outputs):
    root, _ = report_outputs
    path = root / "reports/synthetic/findings.json"
    doc = json.loads(path.read_text())
    doc["findings"]["pie_3plus"].update(value=7.77, ci_lo=1.11, ci_hi=9.99, p=0.0123, p_holm=0.0456,
                                        verdict=fd.NOT_ESTIMABLE)
    path.write_text(json.dumps(doc))
    (root / "metrics/synthetic/summary.json").unlink()  # not read by this block
    row = next(line for line in rn.findings(rn.Outputs(root)).splitlines()
               if line.startswith("| PIEs are enriched for images with 3+"))
    assert "| 7.77 [1.11, 9.99] | 0.0123 | 0.0456 | **not estimable** | FPR " in row


def test_why_block_is_read_from_the_outputs(report_outputs):
    root, _ = report_outputs
    path = root / "metrics/synthetic/summary.json"
    summary = json.loads(path.read_text())
    summary["pie"]["frac_degraded_pie"] = 0.5
    path.write_text(json.dumps(summary))
    reader = json.loads((root / "metrics/synthetic/reader.json").read_text())
    doc = json.loads((root / "reports/synthetic/findings.json").read_text())
    text = rn.why(rn.Outputs(root))
    assert "50% of the PIEs are degraded" in text
    agree = reader["pooled"]["agree"]
    assert f"{agree['n_images_pie']} PIE and {agree['n_images_non_pie']} other images" in text
    assert (f"(p {rn.p_(agree['p'])}; Readers agree less with PIEs' labels: "
            f"**{doc['findings']['reader_label_noise']['verdict']}**)") in text
    assert "Kruskal" not in text


def test_a_hand_edited_number_is_caught(report_outputs):
    root, _ = report_outputs
    o = rn.Outputs(root)
    text = rn.render("<!-- numbers:findings -->\n<!-- /numbers:findings -->\n"
                     "<!-- numbers:why -->\n<!-- /numbers:why -->\n", o)
    assert rn.stale(text, o) == []
    doc = json.loads((root / "reports/synthetic/findings.json").read_text())
    shown = report.fmt_p(doc["findings"]["pie_3plus"]["p_holm"])
    edited = text.replace(f"| {shown} |", "| 0.999 |", 1)
    assert edited != text and rn.stale(edited, o) == ["findings"]


def test_compare_legend_is_found_in_old_and_new_reports():
    from cxrprune.analysis import compare

    for cells in ("Cells: verdict symbol, then this run's value [95% CI].", compare.CELLS):
        legend = f"Source: x. {cells} " + ", ".join(f"{s} {v}" for v, s in compare.SYMBOL.items()) + "."
        assert legend.split("Cells: ", 1)[-1].split(". ", 1)[-1].startswith("✅ reproduced")


def test_air_density_loss_is_the_curves_range():
    with open(REPO / "plots/synthetic/forgettability_curves.csv", newline="") as fh:
        losses = [-100 * float(r["rel_dap"]) for r in csv.DictReader(fh)
                  if r["class_name"] in rn.AIR and abs(float(r["level"]) - 0.9) < 1e-9]
    assert len(losses) == len(rn.AIR)
    assert rn.air_density_loss(rn.Outputs(REPO)) == (
        f"lose {round(min(losses))}-{round(max(losses))}% of their AP by 90% sparsity")


def test_benchmark_rows_come_from_the_results_files(outputs_copy):
    path = outputs_copy / "benchmarks/results/bench_evaluate.json"
    if not path.exists():
        pytest.fail("benchmarks/results/bench_evaluate.json is not committed")
    data = json.loads(path.read_text())
    data["figures"]["speedup_1thread"] = 123.4
    path.write_text(json.dumps(data))
    assert "**123.4x**" in rn.bench_table(rn.Outputs(outputs_copy))
    path.unlink()
    assert "evaluation (`bench_evaluate.py`) |  |  | no committed output" in rn.bench_table(rn.Outputs(outputs_copy))
