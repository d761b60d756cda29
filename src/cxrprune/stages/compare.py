"""Tool ``cxrprune compare``: the findings of every experiment side by side, counted per draw
of the data.

Reads ``dvc exp show --json`` (why DVC and not MLflow, why draws: :mod:`cxrprune.analysis.compare`),
commits what it read to ``reports/compare/<experiment>/`` (``findings.json``, ``params.yaml``)
with ``reports/compare/experiments.json``, and writes ``reports/compare.md`` with
``reports/compare.png``. ``--from reports/compare`` rebuilds the table and figure from that
snapshot alone, in a clone without the experiments' git refs. Not a DVC stage: its input is
the experiments, not the workspace.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cxrprune.analysis import compare
from cxrprune.core.atomic import atomic_path, write_text
from cxrprune.core.config import Params
from cxrprune.core.errors import CxrpruneError
from cxrprune.core.layout import COMPARE_FIGURE, COMPARE_MD, COMPARE_SNAPSHOT
from cxrprune.stages import Stage


def _arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--all-commits", action="store_true",
                        help="experiments of every commit, not only those based on HEAD (dvc exp show -A)")
    source.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                        help="rebuild the table from a committed snapshot (reports/compare: <experiment>/"
                             "findings.json and params.yaml), without dvc exp show or the experiments' git refs")


STAGE = Stage(name="compare",
              help="findings x experiments from `dvc exp show`, counted per draw of the data (reports/compare.md "
                   "and compare.png; what was read: reports/compare/)",
              arguments=_arguments)


def run(params: Params, all_commits: bool = False, from_dir: str | None = None) -> None:
    if from_dir is not None:
        experiments, skipped = compare.load(Path(from_dir))
    else:
        experiments, skipped = compare.collect(_exp_show(all_commits))
        if not experiments:
            raise CxrpruneError("no experiment has a findings report yet; run `dvc repro` or `dvc exp run` "
                                "(the report stage writes reports/<name>/findings.json)")
        compare.save(experiments, skipped, COMPARE_SNAPSHOT)
    with atomic_path(COMPARE_FIGURE, suffix=".png") as tmp:
        compare.plot(experiments, tmp)
    write_text(COMPARE_MD, compare.render(experiments, skipped, COMPARE_FIGURE, COMPARE_SNAPSHOT))
    n_draws = len(compare.draws(experiments))
    source = from_dir if from_dir is not None else f"dvc exp show, committed in {COMPARE_SNAPSHOT}/"
    print(f"compare: {len(experiments)} experiment(s) of {n_draws} data draw(s) ({source}) -> {COMPARE_MD}, "
          f"{COMPARE_FIGURE}" + (f"; {len(skipped)} without a report" if skipped else ""))


def _exp_show(all_commits: bool) -> list[dict]:
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CxrpruneError(f"`dvc exp show --json` failed ({last}); run cxrprune compare in the DVC workspace, "
                            f"or rebuild from the committed snapshot with `cxrprune compare --from {COMPARE_SNAPSHOT}`")
    try:
        entries = json.loads(proc.stdout)
    except ValueError:
        raise CxrpruneError("`dvc exp show --json` printed no JSON; check the DVC version (3.x)") from None
    if not isinstance(entries, list):
        raise CxrpruneError("`dvc exp show --json` printed no list of commits; check the DVC version (3.x)")
    return entries
