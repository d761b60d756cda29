"""DVC stage ``report``: the paper's findings next to this run's values, CIs and verdicts.

Reads ``metrics/<name>/summary.json`` (analyze), ``evaluate.json`` (evaluate) and
``reader.json`` (reader-analyze); writes ``reports/<name>/findings.md`` (figures linked by
relative path) and ``reports/<name>/findings.json`` (a DVC metric, so ``dvc exp show`` and
``cxrprune compare`` see every experiment's verdicts). The rules are
:mod:`cxrprune.analysis.findings`, the rendering :mod:`cxrprune.analysis.report`.
"""

from __future__ import annotations

from pathlib import Path

from cxrprune.analysis import findings, report
from cxrprune.core import upstream
from cxrprune.core.atomic import write_json, write_text
from cxrprune.core.config import Params
from cxrprune.core.layout import SYNTHETIC_ROOT


def run(params: Params) -> None:
    out = params.layout
    summary = upstream.read_json(out.summary, "analyze")
    evaluation = upstream.read_json(out.evaluation, "evaluate")
    reader = upstream.read_json(out.reader_json, "reader-analyze")
    alpha = params.evaluate.alpha
    rows = findings.assess(summary, evaluation, reader, alpha)
    synthetic = Path(params.data.root) == SYNTHETIC_ROOT
    experiment = {"data.name": params.data.name, "data.source": params.data.source, "train.arch": params.train.arch,
                  "train.pretrained": params.train.pretrained, "prune.methods": "+".join(params.prune.methods),
                  "seeds": len(params.seeds), "bootstrap.resamples": params.bootstrap.resamples}
    if synthetic:
        experiment["synthetic.seed"] = params.synthetic.seed
    text = report.render(rows, name=params.data.name, synthetic=synthetic, params=experiment, alpha=alpha,
                         report_path=out.findings_md, layout=out)
    # Lean on purpose: `dvc exp show` turns every leaf into a column (titles and sources are in
    # findings.md and in cxrprune.analysis.findings); the interval as two numbers, because
    # `dvc exp show --json` leaves lists (and nulls) out of metrics.
    ci = {f.claim.key: f.measured.ci or [None, None] for f in rows}
    write_json(out.findings_json, {"calibration": synthetic, "alpha": alpha,
                                   "findings": {f.claim.key: {"verdict": f.verdict, "value": f.measured.value,
                                                              "ci_lo": ci[f.claim.key][0], "ci_hi": ci[f.claim.key][1],
                                                              "p": f.measured.p}
                                                for f in rows}})
    write_text(out.findings_md, text)
    counts = {v: sum(f.verdict == v for f in rows) for v in findings.VERDICTS}
    print(f"report: {out.findings_md}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
