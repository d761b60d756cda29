"""Replicates -> verdicts: the evaluate and analyze stages' library calls, in memory.

:func:`run_replicate` takes a :class:`~cxrprune.validation.generator.Replicate` through the
calls :mod:`cxrprune.stages.evaluate` and :mod:`cxrprune.stages.analyze` make, in their
order and with the configured ``evaluate``/``analyze`` sections, then through
:func:`cxrprune.analysis.findings.assess` as the report stage does (``reader`` None: no
reader study, so the three reader findings are "not measured" and outside the Holm family).
Only the file reading and writing, the figures, MLflow and the weight histogram (no model)
are left out; the metrics documents round-trip through JSON as the stages' files do. A
change to any statistic, test or verdict rule is therefore measured here without a change
to this package.

``resamples > 0`` adds the bootstrap intervals (:class:`cxrprune.analysis.uncertainty.Collector`,
as the evaluate stage builds it); then the verdicts also need the interval to exclude the
null, as in the report. With ``resamples = 0`` there are no intervals and a verdict rests
on its p-value alone, which can only say "reproduced" more often: a false-positive rate
measured without intervals is an upper bound of the one with them.

:func:`run_many` runs replicates in worker processes (spawn, one BLAS/torch thread each);
replicate ``r`` of the setting with effect ``e`` draws from ``SeedSequence(seed,
spawn_key=(effect key, r))``, so a replicate's outcome depends neither on the number of
workers nor on which other settings run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from cxrprune.analysis import evaluate, findings, uncertainty
from cxrprune.analysis import summary as analysis
from cxrprune.compression import predictions
from cxrprune.compression.methods import method_levels
from cxrprune.core.atomic import json_clean
from cxrprune.core.config import AnalyzeConfig, BootstrapConfig, EvaluateConfig
from cxrprune.validation import truth as truths
from cxrprune.validation.generator import Design, Replicate, generate

# The findings measured here: every claim of the report but the reader study's (no readers).
KEYS = tuple(c.key for c in findings.CLAIMS if not c.key.startswith("reader_"))
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Config:
    """Everything a replicate needs, picklable for the worker processes."""

    design: Design
    evaluate: EvaluateConfig
    analyze: AnalyzeConfig
    levels: tuple[float, ...]
    n_seeds: int
    resamples: int = 0  # bootstrap resamples; 0: no intervals (params' minimum of 100 does not apply here)
    bootstrap: BootstrapConfig = BootstrapConfig()  # its seed and level; its resamples are ``resamples``


@dataclass
class Outcome:
    """One replicate's verdict, measured value and interval of every finding in :data:`KEYS`,
    and (with intervals) the value each interval should cover (:mod:`.truth`)."""

    effect: float
    replicate: int
    verdicts: dict[str, str]
    values: dict[str, float | None]
    intervals: dict[str, list | None]
    targets: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0  # wall time in its worker
    cpu_seconds: float = 0.0  # CPU time of its worker process: the cost on a machine no one else uses


def replicate_rng(seed: int, effect: float, replicate: int) -> np.random.Generator:
    """The random stream of replicate ``replicate`` of the setting with effect ``effect``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(effect_key(effect), replicate)))


def effect_key(effect: float) -> int:
    """A setting's stream key: the effect in thousandths (0.5 -> 500), so adding or removing
    a setting never changes another's replicates."""
    return int(round(effect * 1000))


def evaluate_replicate(rep: Replicate, cfg: EvaluateConfig, resamples: int, boot: BootstrapConfig
                       ) -> tuple[pd.DataFrame, dict[str, Any], uncertainty.APResamples | None]:
    """The evaluate stage's calls: the per-seed contract check and metrics, mAP, the paired
    tests of every method, the summary and (with ``resamples``) the bootstrap intervals."""
    labels, classes = rep.test_labels, rep.classes
    test_ids = labels["image_id"].astype(str).tolist()
    methods = [analysis.METHOD]
    collector = uncertainty.Collector(labels, classes, resamples, boot.seed, boot.level) if resamples else None
    tables = []
    for seed, table in zip(rep.seeds, rep.tables):
        where = f"validation replicate, seed {seed}"
        predictions.check_predictions(table, where, test_ids, classes, methods, rep.levels)
        tables.append(evaluate.per_class_metrics(table, labels, classes, seed, cfg.f1_threshold, source=where))
        if collector is not None:
            collector.add(seed, table)
    per_class = pd.concat(tables, ignore_index=True)
    maps = evaluate.map_table(per_class)
    by_method = evaluate.paired_tests_by_method(maps, {m: method_levels(m, rep.levels) for m in methods},
                                                cfg.test, cfg.correction, cfg.alpha)
    summary = evaluate.summarize(maps, by_method[analysis.METHOD], cfg, by_method)
    resampled = collector.result() if collector is not None else None
    if resampled is not None:
        intervals = uncertainty.map_intervals(resampled)
        summary.update({**uncertainty.map_ci_keys(intervals, evaluate.REPORTED_LEVELS),
                        "bootstrap": uncertainty.describe(resampled)})
    return per_class, _as_read(summary), resampled


def analyze_replicate(rep: Replicate, cfg: AnalyzeConfig, per_class: pd.DataFrame, evaluation: dict[str, Any],
                      resampled: uncertainty.APResamples | None) -> dict[str, Any]:
    """The analyze stage's :func:`~cxrprune.analysis.summary.analyze` on the L1 blocks at 0 and
    at ``pie_sparsity`` (as :func:`~cxrprune.compression.predictions.read_blocks` gives them),
    without a model; returns ``summary.json`` as the report reads it."""
    dense, sparse = zip(*(blocks(t, [0.0, cfg.pie_sparsity]) for t in rep.tables))
    result = analysis.analyze(cfg, rep.classes, per_class, evaluation, rep.train_labels, rep.test_labels,
                              list(dense), list(sparse), rep.truth, None, resampled)
    return _as_read(result.summary)


def blocks(table: pd.DataFrame, levels: Sequence[float]) -> list[pd.DataFrame]:
    """The rows of the L1 method at each of ``levels``, in that order, index reset."""
    return [predictions.select_block(table, analysis.METHOD, level) for level in levels]


def _as_read(doc: dict[str, Any]) -> dict[str, Any]:
    """A metrics document as the next stage reads it back from its JSON file."""
    return json.loads(json.dumps(json_clean(doc), allow_nan=False))


def run_replicate(config: Config, seed: int, effect: float, replicate: int) -> Outcome:
    """Draw, evaluate, analyze and assess one replicate. With intervals, ``targets`` holds the
    value each finding's interval should cover (:mod:`cxrprune.validation.truth`)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    rng = replicate_rng(seed, effect, replicate)
    rep = generate(config.design, effect, config.levels, config.n_seeds, config.analyze.pie_sparsity, rng)
    per_class, evaluation, resampled = evaluate_replicate(rep, config.evaluate, config.resamples, config.bootstrap)
    summary = analyze_replicate(rep, config.analyze, per_class, evaluation, resampled)
    rows = findings.assess(summary, evaluation, None, config.evaluate.alpha)
    by_key = {f.claim.key: f for f in rows}
    targets: dict[str, float | None] = {}
    if config.resamples:
        targets.update(truths.curve_targets(rep, config.design, config.analyze, config.evaluate.margin, rng))
        targets.update(truths.pie_targets(rep, config.design, config.analyze, rng))
    return Outcome(effect, replicate,
                   verdicts={k: by_key[k].verdict for k in KEYS},
                   values={k: by_key[k].measured.value for k in KEYS},
                   intervals={k: by_key[k].measured.ci for k in KEYS},
                   targets=targets, seconds=time.perf_counter() - start,
                   cpu_seconds=time.process_time() - cpu_start)


def _init_worker() -> None:
    """One torch thread per worker process (BLAS/OpenMP get theirs from the environment the
    pool was spawned with): the workers already fill the cores, and more threads per worker
    on a 2-core machine only contend."""
    import torch  # the analysis modules import it anyway

    torch.set_num_threads(1)


def _run_task(args: tuple[Config, int, float, int]) -> Outcome:
    return run_replicate(*args)


def run_many(config: Config, seed: int, tasks: Iterable[tuple[float, int]], workers: int,
             progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every ``(effect, replicate)`` task, in ``workers`` processes (1: in this process);
    outcomes sorted by effect then replicate. ``progress`` is called as each one finishes."""
    jobs = [(config, seed, e, r) for e, r in tasks]
    out: list[Outcome] = []
    if workers <= 1:
        for job in jobs:
            out.append(_run_task(job))
            if progress:
                progress(out[-1])
    else:
        saved = {v: os.environ.get(v) for v in _THREAD_VARIABLES}
        os.environ.update({v: "1" for v in _THREAD_VARIABLES})  # inherited by the spawned workers
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker) as pool:
                for outcome in pool.map(_run_task, jobs, chunksize=1):
                    out.append(outcome)
                    if progress:
                        progress(outcome)
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old
    return sorted(out, key=lambda o: (o.effect, o.replicate))
