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
    write_json(out.findings_json, report.document(rows, calibration=synthetic, alpha=alpha))
    write_text(out.findings_md, text)
    counts = {v: sum(f.verdict == v for f in rows) for v in findings.VERDICTS}
    print(f"report: {out.findings_md}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
