"""Tool ``cxrprune compare``: the findings of every experiment side by side.

Reads ``dvc exp show --json`` (why DVC and not MLflow: :mod:`cxrprune.analysis.compare`)
and writes ``reports/compare.md`` with ``reports/compare.png`` (findings x experiments,
verdicts and CIs). Not a DVC stage: its input is the experiments, not the workspace.
"""

from __future__ import annotations

import json
import subprocess
import sys

from cxrprune.analysis import compare
from cxrprune.core.atomic import atomic_path, write_text
from cxrprune.core.config import Params
from cxrprune.core.errors import CxrpruneError
from cxrprune.core.layout import COMPARE_FIGURE, COMPARE_MD


def run(params: Params, all_commits: bool = False) -> None:
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CxrpruneError(f"`dvc exp show --json` failed ({last}); run cxrprune compare in the DVC workspace")
    try:
        entries = json.loads(proc.stdout)
    except ValueError:
        raise CxrpruneError("`dvc exp show --json` printed no JSON; check the DVC version (3.x)") from None
    experiments, skipped = compare.collect(entries)
    if not experiments:
        raise CxrpruneError("no experiment has a findings report yet; run `dvc repro` or `dvc exp run` "
                            "(the report stage writes reports/<name>/findings.json)")
    with atomic_path(COMPARE_FIGURE, suffix=".png") as tmp:
        compare.plot(experiments, tmp)
    write_text(COMPARE_MD, compare.render(experiments, skipped, COMPARE_FIGURE))
    print(f"compare: {len(experiments)} experiment(s) -> {COMPARE_MD}, {COMPARE_FIGURE}"
          + (f"; {len(skipped)} without a report" if skipped else ""))
