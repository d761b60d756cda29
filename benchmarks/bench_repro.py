"""How long the default study takes: `dvc repro` of the committed pipeline from nothing.

One subprocess: a fresh copy of the repository's tracked files (``git ls-files``: dvc.yaml,
params.yaml, src/, ...) in a temporary git repository, with no DVC cache, no data and no
MLflow store, then ``dvc repro`` with the project's environment (what ``make repro`` runs
after its set-up). Wall time per stage is taken from the time each ``Running stage`` line
appears; the total is the whole command. Not interleaved with anything: it measures the
machine as it is, so the CPU share (the children's CPU time over the wall time, at most the
number of cores) says whether the machine was quiet. The set-up (``make install``) is not
included.

    .venv/bin/python benchmarks/bench_repro.py [--keep]
    .venv/bin/python benchmarks/bench_repro.py --target studies/pie-treatment/dvc.yaml --tag pie-treatment

Writes ``benchmarks/results/bench_repro.{txt,json}`` (CPU model, flags, load, per-stage
seconds); the README's run-time sentence is rendered from it (``make readme-numbers``).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import record

REPO = Path(__file__).resolve().parents[1]


def copy_tracked(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if not src.is_file():
            continue
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    # The committed results would make `dvc repro` a no-op (dvc.lock matches): start from nothing.
    for lock in dest.glob("**/dvc.lock"):
        lock.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    ap.add_argument("--target", default="", help="a dvc.yaml to reproduce instead of the default pipeline, e.g. "
                                                 "studies/pie-treatment/dvc.yaml (the opt-in PIE treatment study)")
    ap.add_argument("--tag", default="", help="results file suffix: benchmarks/results/bench_repro-TAG.*")
    args = ap.parse_args()
    with record("bench_repro" + (f"-{args.tag}" if args.tag else ""), args) as figures:
        work = Path(tempfile.mkdtemp(prefix="cxrprune-repro-"))
        try:
            copy_tracked(work)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            env["DVC_NO_ANALYTICS"] = "1"
            # The stages import cxrprune from the copy, not from the editable install's checkout:
            # an edit made there while the benchmark runs must not change what it measures.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work / "src"), env.get("PYTHONPATH", "")]))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.Popen(["dvc", "repro", *([args.target] if args.target else [])], cwd=work, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
            starts: list[tuple[str, float]] = []
            for line in proc.stdout:
                m = re.match(r"Running stage '([^']+)'", line)
                if m:
                    starts.append((m.group(1), time.perf_counter() - t0))
            rc = proc.wait()
            total = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if rc != 0:
                raise SystemExit(f"dvc repro failed with status {rc} in {work}")
            child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            stages = {name: round((starts[i + 1][1] if i + 1 < len(starts) else total) - t, 1)
                      for i, (name, t) in enumerate(starts)}
            print(f"dvc repro {args.target or 'of the default study'} from nothing: {total:.0f} s "
                  f"({int(total // 60)} min {total % 60:.0f} s), children's CPU {child_cpu:.0f} s "
                  f"(share {child_cpu / total:.2f} of {os.cpu_count()} cores)")
            for name, s in stages.items():
                print(f"  {name:<16} {s:7.1f} s")
            groups: dict[str, float] = {}
            for name, s in stages.items():
                groups[name.split("@")[0]] = groups.get(name.split("@")[0], 0.0) + s
            figures.update({"target": args.target or "dvc.yaml", "total_s": total, "children_cpu_s": child_cpu, "children_cpu_share": child_cpu / total,
                            "stages_s": stages, "stage_groups_s": groups})
        finally:
            if args.keep:
                print(f"workspace kept: {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
