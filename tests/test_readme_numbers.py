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

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import readme_numbers as rn

EXPECTED = {"README.md": {"repro", "findings", "why", "benchmarks", "operating-points", "train-speed", "pie-answer",
                          "pie-cost", "compare"}, "benchmarks/README.md": {"benchmarks"},
            "docs/SCALEOUT.md": {"scaleout"}}


@pytest.mark.parametrize("doc", rn.DOCS)
def test_every_numbers_block_matches_the_committed_outputs(doc):
    text = (REPO / doc).read_text()
    assert {m.group(2) for m in rn.BLOCK.finditer(text)} == EXPECTED[doc], f"{doc}: numbers blocks missing"
    assert rn.stale(text, rn.Outputs(REPO)) == [], f"{doc}: run python benchmarks/readme_numbers.py --write"


def test_a_hand_edited_number_is_caught():
    text = (REPO / "README.md").read_text()
    ev = json.loads((REPO / "metrics/synthetic/evaluate.json").read_text())
    shown = f"random pruning is at {ev['random_map_at_50']:.3f} by 50%"
    assert shown in text
    edited = text.replace(shown, f"random pruning is at {ev['random_map_at_50'] + 0.001:.3f} by 50%")
    assert rn.stale(edited, rn.Outputs(REPO)) == ["findings"]


@pytest.fixture
def outputs_copy(tmp_path):
    for rel in ("metrics/synthetic", "plots/synthetic", "benchmarks/results", "reports"):
        shutil.copytree(REPO / rel, tmp_path / rel, ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # the PIE study's weight
    return tmp_path


def test_blocks_are_read_from_the_outputs(outputs_copy):
    path = outputs_copy / "metrics/synthetic/summary.json"
    summary = json.loads(path.read_text())
    summary["map_dense"] = 0.4321
    summary["pie"]["frac_degraded_pie"] = 0.5
    path.write_text(json.dumps(summary))
    text = rn.render((REPO / "README.md").read_text(), rn.Outputs(outputs_copy))
    assert "dense mAP 0.432," in text
    assert "50% of the PIEs are degraded" in text
    assert rn.stale((REPO / "README.md").read_text(), rn.Outputs(outputs_copy)) == ["findings", "why"]


def test_air_density_loss_is_the_curves_range():
    with open(REPO / "plots/synthetic/forgettability_curves.csv", newline="") as fh:
        losses = [-100 * float(r["rel_dap"]) for r in csv.DictReader(fh)
                  if r["class_name"] in rn.AIR and abs(float(r["sparsity"]) - 0.9) < 1e-9]
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
