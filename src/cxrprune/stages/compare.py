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
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

from cxrprune.analysis import compare
from cxrprune.core.atomic import atomic_path, write_text
from cxrprune.core.config import Params
from cxrprune.core.errors import CxrpruneError
from cxrprune.core.layout import COMPARE_SNAPSHOT, compare_outputs
from cxrprune.core.stage import Stage


def _arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--all-commits", action="store_true",
                        help="experiments of every commit, not only those based on HEAD (dvc exp show -A)")
    source.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                        help="rebuild the table from a committed snapshot (reports/compare: <experiment>/"
                             "findings.json and params.yaml), without dvc exp show or the experiments' git refs")
    p.add_argument("--name", default="compare", metavar="NAME",
                   help="write reports/NAME.md, reports/NAME.png and the snapshot reports/NAME/ (default: compare)")
    p.add_argument("--only", action="append", default=None, metavar="PATTERN",
                   help="only the experiments whose name matches this glob (repeatable), e.g. 'planted-*'")


STAGE = Stage(name="compare",
              help="findings x experiments from `dvc exp show`, counted per draw of the data (reports/compare.md "
                   "and compare.png; what was read: reports/compare/)",
              arguments=_arguments)


def run(params: Params, all_commits: bool = False, from_dir: str | None = None, name: str = "compare",
        only: list[str] | None = None) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise CxrpruneError(f"--name {name!r}: use letters, digits, '-', '_' or '.' (it names reports/NAME.md)")
    md, snapshot, figure = compare_outputs(name)
    if from_dir is not None:
        experiments, skipped = compare.load(Path(from_dir))
    else:
        experiments, skipped = compare.collect(_exp_show(all_commits))
    if only:
        experiments = [e for e in experiments if any(fnmatch.fnmatchcase(e.name, pat) for pat in only)]
        if not experiments:
            raise CxrpruneError(f"--only {' '.join(only)}: no experiment with a findings report matches; "
                                "`dvc exp show` (or the snapshot's folders) lists their names")
    if from_dir is None:
        if not experiments:
            raise CxrpruneError("no experiment has a findings report yet; run `dvc repro` or `dvc exp run` "
                                "(the report stage writes reports/<name>/findings.json)")
        compare.save(experiments, skipped, snapshot)
    with atomic_path(figure, suffix=".png") as tmp:
        compare.plot(experiments, tmp)
    write_text(md, compare.render(experiments, skipped, figure, snapshot))
    n_draws = len(compare.draws(experiments))
    source = from_dir if from_dir is not None else f"dvc exp show, committed in {snapshot}/"
    print(f"compare: {len(experiments)} experiment(s) of {n_draws} data draw(s) ({source}) -> {md}, "
          f"{figure}" + (f"; {len(skipped)} without a report" if skipped else ""))


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
