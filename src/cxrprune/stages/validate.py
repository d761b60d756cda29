"""``cxrprune validate``: false-positive rate and power of every verdict on planted effects.

A thin entry point over :mod:`cxrprune.validation`: checks the options, runs ``replicates``
replicates at each effect size in worker processes with the ``evaluate`` and ``analyze``
sections and levels of ``params.yaml``, and writes ``<out>.json`` and ``<out>.txt``
atomically. Not a DVC stage: it reads no pipeline output and its result describes the
statistics, not a dataset.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError
from cxrprune.core.layout import VALIDATION
from cxrprune.core.stage import Stage
from cxrprune.validation.effects import check_effect

MIN_REPLICATES = 20  # below this a rate's Monte Carlo interval is wider than +-0.2
DEFAULT_EFFECTS = "0,0.5,1"
MIN_RESAMPLES = 20  # a percentile interval from fewer has no 2.5% tail worth the name
OUT = VALIDATION.with_suffix("")  # writes OUT.json (the report reads it) and OUT.txt


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replicates", type=int, default=200, metavar="R",
                   help=f"replicates per effect size, at least {MIN_REPLICATES} (default: 200)")
    p.add_argument("--effects", default=DEFAULT_EFFECTS, metavar="E,E,...",
                   help=f"planted effect sizes in [0, 1], 0 = nothing planted (default: {DEFAULT_EFFECTS})")
    p.add_argument("--seed", type=int, default=0, help="seed of every replicate's random stream (default: 0)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: all cores)")
    p.add_argument("--resamples", type=int, default=50, metavar="B",
                   help="bootstrap resamples per replicate for the intervals and their coverage; 0: no "
                        "intervals, verdicts from p-values alone (default: 50)")
    p.add_argument("--out", default=str(OUT), metavar="PATH",
                   help=f"writes PATH.json and PATH.txt (default: {OUT})")


STAGE = Stage(name="validate",
              help="false-positive rate and power of every verdict on planted-effect replicates "
                   "(benchmarks/results/verdicts.{json,txt})",
              arguments=_arguments)


def parse_effects(text: str) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``; each in the generator's range, no duplicates."""
    effects = []
    for part in str(text).split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise ConfigError(f"--effects: {part.strip()!r} is not a number; give a comma-separated list "
                              f"such as {DEFAULT_EFFECTS}") from None
        effects.append(check_effect(value, "--effects"))
    if len(set(effects)) != len(effects):
        raise ConfigError(f"--effects: {text!r} lists an effect size twice")
    return sorted(effects)


def check_options(replicates: int, workers: int | None, resamples: int) -> int:
    """The options the parser cannot check; returns the number of worker processes."""
    if replicates < MIN_REPLICATES:
        raise ConfigError(f"--replicates: at least {MIN_REPLICATES} replicates per effect size are needed for "
                          f"a rate worth reporting, got {replicates}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: at least 1 process, got {workers}")
    if resamples != 0 and resamples < MIN_RESAMPLES:
        raise ConfigError(f"--resamples: 0 (no intervals) or at least {MIN_RESAMPLES}, got {resamples}")
    return workers if workers is not None else default_workers()


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def command_line(replicates: int, effects: list[float], seed: int, workers: int, out: str, resamples: int) -> str:
    """The command that reproduces this run (the worker count changes no number, only the time;
    the params sections it used are in the JSON's ``design``)."""
    parts = ["cxrprune", "validate", "--replicates", str(replicates), "--effects", ",".join(f"{e:g}" for e in effects),
             "--seed", str(seed), "--resamples", str(resamples), "--workers", str(workers), "--out", out]
    return shlex.join(parts)


def run(params: Params, replicates: int, effects: str, seed: int, workers: int | None, out: str,
        resamples: int) -> None:
    """Check the options, run every (effect, replicate), write and print the table."""
    effect_sizes = parse_effects(effects)
    n_workers = check_options(replicates, workers, resamples)
    # Imported after the checks: the analysis modules take seconds to import (torch).
    from cxrprune.validation import harness, report
    from cxrprune.validation.generator import Design

    config = harness.Config(Design(), params.evaluate, params.analyze, tuple(params.prune.levels),
                            len(params.seeds), resamples, params.bootstrap)
    tasks = [(e, r) for e in effect_sizes for r in range(replicates)]
    start = time.perf_counter()
    done = 0

    def progress(_: harness.Outcome) -> None:
        nonlocal done
        done += 1
        if done % max(1, len(tasks) // 20) == 0 or done == len(tasks):
            elapsed = time.perf_counter() - start
            print(f"validate: {done}/{len(tasks)} replicates, {elapsed:.0f} s", file=sys.stderr, flush=True)

    outcomes = harness.run_many(config, seed, tasks, n_workers, progress)
    command = command_line(replicates, effect_sizes, seed, n_workers, out, resamples)
    doc = report.document(config, outcomes, effect_sizes, replicates=replicates, seed=seed, workers=n_workers,
                          command=command, wall_seconds=time.perf_counter() - start)
    json_path, txt_path = report.write(out, doc)
    print(report.text(doc), end="")
    print(f"validate: wrote {json_path} and {txt_path}")
