"""The ``cxrprune`` command: one sub-command per pipeline stage, plus tools.

Each stage's logic lives in library modules; ``cxrprune.stages.<name>.run`` is the thin
entry point that ``dvc.yaml`` calls through this command. A :class:`CxrpruneError` is
printed as one line (``cxrprune: error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from cxrprune.core import catalog
from cxrprune.core.errors import CxrpruneError

# name -> (module under cxrprune.stages, help, extra-argument adder)
_Adder = Callable[[argparse.ArgumentParser], None]


def _seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, required=True, help="which of params.yaml's seeds")


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


def _optional_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="one of params.yaml's seeds (default: every seed)")


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folder", required=True, help="folder of {dataset}_resnet50_seed-{s}_prune-{k}.pkl files")
    p.add_argument("--labels", required=True, help="the dataset's test label CSV, or the folder holding its label CSVs")
    p.add_argument("--dataset", choices=[s.name for s in catalog.SOURCES.values() if s.published_predictions],
                   default="nih-cxr-lt",
                   help="which dataset the predictions are of (default: nih-cxr-lt)")
    p.add_argument("--train-labels", default=None,
                   help="the train label CSV (default: the test CSV's name with test -> train)")


def _repro_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the per-seed stages as Ray tasks in parallel: alone, on a local Ray runtime; "
                        "with HOST:PORT (or auto), on that running cluster (default: plain dvc repro)")
    p.add_argument("--targets", nargs="+", default=None, metavar="STAGE",
                   help="stages to reproduce, with their upstream (default: the whole pipeline)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="N",
                   help="seeds in flight at once (default: as many as the cluster's resources allow)")
    p.add_argument("--cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray runtime (default: all cores; ignored with ADDRESS)")
    p.add_argument("--task-cpus", type=int, default=None, metavar="N",
                   help="CPUs (and torch threads) per seed task (default: 1 GPU's share of its node, "
                        "or without GPUs all CPUs / seeds in flight)")
    p.add_argument("--task-gpus", type=int, default=None, metavar="N",
                   help="GPUs per seed task (default: 1 if the cluster has GPUs, else 0)")
    p.add_argument("--resources", default=None, metavar="JSON",
                   help="extra Ray custom resources per seed task, e.g. '{\"gpu_box\": 1}'")
    p.add_argument("--remote", default=None, metavar="NAME",
                   help="workers without the shared workspace: pull inputs from and push outputs to this "
                        "DVC remote (default: tasks run in place on a shared filesystem)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="Ray retries of a task lost with its node or worker (default: 3; a failing stage "
                        "is never retried)")
    p.add_argument("--log-dir", default=".dvc/tmp/ray-logs", metavar="DIR",
                   help="per-stage logs and summary.json (default: .dvc/tmp/ray-logs)")
    p.add_argument("--progress", choices=["auto", "table", "lines", "none"], default="auto",
                   help="live view on stderr: a redrawn table (terminal), one line per change, or none")


def _fold_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fold", type=int, required=True, help="which of params.yaml's pie_treatment.folds is scored")
    _seed_arg(p)


def _treatment_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--treatment", required=True, help="which of params.yaml's pie_treatment.treatments")
    _seed_arg(p)


def _arm_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arm", required=True, help="which arm of the frequency intervention: rare_a, rare_b or control")
    _seed_arg(p)


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="one of params.yaml's prune.methods (l1, channel, int8, ...)")
    p.add_argument("--level", type=float, required=True,
                   help="one of prune.levels the study ran (0 for a one-level method such as int8)")
    p.add_argument("--seed", type=int, default=None, help="whose model (default: the first of params.yaml's seeds)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write it (default: data/artifacts/<name>/seed-<s>/<method>-<level>.pt or .onnx)")


def _compare_args(p: argparse.ArgumentParser) -> None:
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


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replicates", type=int, default=200, metavar="R",
                   help="replicates per effect size, at least 20 (default: 200)")
    p.add_argument("--effects", default="0,0.5,1", metavar="E,E,...",
                   help="planted effect sizes in [0, 1], 0 = nothing planted (default: 0,0.5,1)")
    p.add_argument("--seed", type=int, default=0, help="seed of every replicate's random stream (default: 0)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: all cores)")
    p.add_argument("--resamples", type=int, default=50, metavar="B",
                   help="bootstrap resamples per replicate for the intervals and their coverage; 0: no "
                        "intervals, verdicts from p-values alone (default: 50)")
    p.add_argument("--out", default="benchmarks/results/verdicts", metavar="PATH",
                   help="writes PATH.json and PATH.txt (default: benchmarks/results/verdicts)")


COMMANDS: dict[str, tuple[str, str, _Adder]] = {
    "generate": ("generate", "write the synthetic CXR-LT dataset in the NIH-CXR-LT layout", _no_args),
    "prepare": ("prepare", "validate a dataset, write label tables and the uint8 image cache", _no_args),
    "train": ("train", "train one seed (checkpoint, history, MLflow run)", _seed_arg),
    "prune": ("prune", "prune one seed at every level and predict the test set", _seed_arg),
    "evaluate": ("evaluate", "per-class AP/AUROC/F1, mAP vs sparsity, paired test", _no_args),
    "analyze": ("analyze", "forgettability, FCD, PIEs, summary.json, plots", _no_args),
    "reader-sample": ("reader_sample", "draw the blinded reader-study sample, write one HTML form per reader",
                      _no_args),
    "reader-simulate": ("reader_simulate", "simulated readers' answers from the synthetic ground truth", _no_args),
    "reader-analyze": ("reader_analyze", "validate readers' answers, PIE vs non-PIE tests, figure, MLflow",
                       _no_args),
    "report": ("report", "findings of the paper vs this run: values, CIs, verdicts (reports/<name>/findings.md)",
               _no_args),
    "deployment": ("deployment", "per method: operating point, bytes, latency and the diseases losing more than "
                   "the tolerance at each level (reports/<name>/deployment.md)", _no_args),
    "compare": ("compare", "findings x experiments from `dvc exp show`, counted per draw of the data "
                "(reports/compare.md and compare.png; what was read: reports/compare/)", _compare_args),
    "log-mlflow": ("log_mlflow", "write the MLflow records a seed's train/prune outputs lack (after the "
                   "tracking store was unreachable or lost)", _optional_seed_arg),
    "import-predictions": ("import_predictions", "convert the authors' published prediction pickles into "
                           "this project's prediction tables and test labels", _import_args),
    "pie-fold": ("pie_fold", "PIE study: train one seed without one fold, score that fold's training images",
                 _fold_seed_args),
    "pie-score": ("pie_score", "PIE study: out-of-fold training-set PIEs, checked against the synthetic truth",
                  _no_args),
    "pie-retrain": ("pie_retrain", "PIE study: retrain one seed under one treatment, prune, predict the test set",
                    _treatment_seed_args),
    "pie-report": ("pie_report", "PIE study: outcome of each treatment, paired tests, pie_treatment.json, figure",
                   _no_args),
    "intervention-train": ("intervention_train", "frequency intervention: train one seed of one arm (hidden "
                           "positives masked out of the loss), prune, predict the test set", _arm_seed_args),
    "intervention-report": ("intervention_report", "frequency intervention: each class rare vs common, sign-flip "
                            "test over classes, frequency_intervention.json, figure", _no_args),
    "export": ("export", "write one deployable artifact (a seed's model, one method and level) with a sidecar "
               "saying how to load it, checked against the study's predictions", _export_args),
    "repro": ("repro", "dvc repro, with the per-seed stages run in parallel as Ray tasks (--ray)", _repro_args),
    "validate": ("validate", "false-positive rate and power of every verdict on planted-effect replicates "
                 "(benchmarks/results/verdicts.{json,txt})", _validate_args),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxrprune", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, _, _ = COMMANDS[args.command]
    try:
        from cxrprune.core.config import load_params

        params = load_params(args.params)
        module = importlib.import_module(f"cxrprune.stages.{module_name}")
        kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "params")}
        module.run(params, **kwargs)
    except CxrpruneError as exc:
        print(f"cxrprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrprune: interrupted; finished outputs are kept, rerun the stage to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
