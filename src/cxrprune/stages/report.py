"""DVC stage ``report``: the paper's findings next to this run's values, CIs and verdicts.

Reads ``metrics/<name>/summary.json`` (analyze), ``evaluate.json`` (evaluate) and
``reader.json`` (reader-analyze); writes ``reports/<name>/findings.md`` (figures linked by
relative path) and ``reports/<name>/findings.json`` (a DVC metric, so ``dvc exp show`` and
``cxrprune compare`` see every experiment's verdicts). Each row also shows the finding's
false-positive rate and power measured on planted effects (``benchmarks/results/verdicts.json``,
``cxrprune validate``). The rules are
:mod:`cxrprune.analysis.findings`, the rendering :mod:`cxrprune.analysis.report`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrprune.analysis import findings, report
from cxrprune.core import upstream
from cxrprune.core.atomic import write_json, write_text
from cxrprune.core.config import Params
from cxrprune.core.errors import DataError
from cxrprune.core.layout import SYNTHETIC_ROOT, VALIDATION
from cxrprune.core.stage import Stage


STAGE = Stage(name="report",
              help="findings of the paper vs this run: values, CIs, verdicts (reports/<name>/findings.md)")


def _validation() -> dict | None:
    """The committed planted-effect rates, or None where the file is absent."""
    if not VALIDATION.exists():
        return None
    try:
        doc = json.loads(VALIDATION.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{VALIDATION}: damaged ({exc}); restore it with `git checkout {VALIDATION}` or rerun the "
                        "command in its footer (`cxrprune validate ...`)") from None
    return doc if isinstance(doc, dict) else None


def run(params: Params) -> None:
    out = params.layout
    summary = upstream.read_json(out.summary)
    evaluation = upstream.read_json(out.evaluation)
    reader = upstream.read_json(out.reader_json)
    alpha = params.evaluate.alpha
    rows = findings.assess(summary, evaluation, reader, alpha)
    synthetic = Path(params.data.root) == SYNTHETIC_ROOT
    experiment = {"data.name": params.data.name, "data.source": params.data.source, "train.arch": params.train.arch,
                  "train.pretrained": params.train.pretrained, "prune.methods": "+".join(params.prune.methods),
                  "seeds": len(params.seeds), "bootstrap.resamples": params.bootstrap.resamples}
    if synthetic:
        experiment["synthetic.seed"] = params.synthetic.seed
    # The committed planted-effect rates (optional: a clone without them reports "not validated").
    validation = _validation()
    text = report.render(rows, name=params.data.name, synthetic=synthetic, params=experiment, alpha=alpha,
                         report_path=out.findings_md, layout=out, validation=validation,
                         planted=(list(params.synthetic.mechanisms), params.synthetic.effect) if synthetic else None)
    write_json(out.findings_json, report.document(rows, calibration=synthetic, alpha=alpha))
    write_text(out.findings_md, text)
    counts = {v: sum(f.verdict == v for f in rows) for v in findings.VERDICTS}
    print(f"report: {out.findings_md}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
