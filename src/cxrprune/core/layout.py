"""Every path a stage reads or writes, in one place.

``dvc.yaml`` (and the studies' pipeline files) name the same paths with ``${data.name}``;
``tests/test_layout.py`` checks that each ``outs``/``metrics`` entry is an entry of this module
that its stage declares, so the pipeline definition, the stages and the tests agree by
construction. Paths are relative to the
repository root (stages run there: ``dvc repro`` sets the working directory).

Each entry also says which DVC stage writes it (``@writes``), so that a stage reading
another's output names the stage to rerun from here (:func:`producer`, :func:`producer_of`)
rather than typing it: the lower layers (``compression``, ``analysis``) need that answer too,
and they cannot import ``cxrprune.stages``. A stage's declaration
(:class:`cxrprune.core.stage.Stage`) lists its outputs from the same marks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

SYNTHETIC_ROOT = Path("data/raw/synthetic")  # the generate stage's output (NIH-CXR-LT layout)
RESUME_ROOT = Path("data/.resume")  # outside every DVC output: DVC deletes outputs before a rerun
RAY_LOG_DIR = Path(".dvc/tmp/ray-logs")  # inside DVC's own git-ignored tmp folder
# The opt-in studies' pipeline files: their stages are `dvc repro <file>:<stage>` targets.
PIE_STUDY = "studies/pie-treatment/dvc.yaml"
INTERVENTION_STUDY = "studies/frequency-intervention/dvc.yaml"

_F = TypeVar("_F", bound=Callable)


def writes(stage: str, study: str | None = None) -> Callable[[_F], _F]:
    """Marks a :class:`Layout` entry with the DVC stage that writes it (of ``study``'s
    pipeline file; None: ``dvc.yaml``). An entry with arguments (``seed``, ...) belongs to a
    ``matrix`` stage whose items are those arguments, in order."""
    def mark(fn: _F) -> _F:
        fn.writer = (stage, study)  # type: ignore[attr-defined]
        return fn
    return mark


def _plot_table_entry(stage: str, stem: str) -> property:
    """A Layout entry for ``plots/<name>/<stem>.csv`` written by ``stage`` (one line per table
    instead of a five-line property each)."""
    @writes(stage)
    def entry(self: "Layout") -> Path:
        return self.plot_table(stem)
    return property(entry)


# Figures of the analyze stage, in plots/<name>/figures/.
ANALYZE_FIGURES = ("map_vs_sparsity.png", "forgettability_curves.png", "forgetting_vs_frequency.png", "fcd.png",
                   "pie_ratios.png", "weight_histogram.png", "pareto.png")


@dataclass(frozen=True)
class Layout:
    """The outputs of the dataset ``name`` (``data.name`` in params.yaml)."""

    name: str

    # --- generate -----------------------------------------------------------------------
    @property
    @writes("generate")
    def synthetic_root(self) -> Path:
        """The same for every data name: the synthetic dataset (see SYNTHETIC_ROOT)."""
        return SYNTHETIC_ROOT

    # --- prepare ------------------------------------------------------------------------
    @property
    @writes("prepare")
    def prepared(self) -> Path:
        """``labels_{split}.parquet``, ``images_{split}.npy``, ``meta.json`` (+ ``truth.parquet``)."""
        return Path("data/prepared") / self.name

    @property
    @writes("prepare")
    def truth(self) -> Path:
        """Synthetic data only: which labels were flipped and which images degraded."""
        return self.prepared / "truth.parquet"

    # --- train@seed ---------------------------------------------------------------------
    @property
    @writes("train")
    def models(self) -> Path:
        return Path("data/models") / self.name

    @writes("train")
    def model_dir(self, seed: int) -> Path:
        return self.models / f"seed-{seed}"

    @writes("train")
    def model_file(self, seed: int) -> Path:
        return self.model_dir(seed) / "model.pt"

    @writes("train")
    def history(self, seed: int) -> Path:
        return self.model_dir(seed) / "history.csv"

    @writes("train")
    def run_record(self, seed: int) -> Path:
        """``run.json``: the seed's MLflow run id, experiment id and tracking URI."""
        return self.model_dir(seed) / "run.json"

    @writes("train")
    def resume_file(self, seed: int) -> Path:
        return RESUME_ROOT / self.name / f"train-seed-{seed}.pt"

    # --- prune@seed ---------------------------------------------------------------------
    @property
    def predictions(self) -> Path:
        return Path("data/predictions") / self.name

    @writes("prune")
    def predictions_file(self, seed: int) -> Path:
        return self.predictions / f"seed-{seed}.parquet"

    @writes("prune")
    def efficiency_file(self, seed: int) -> Path:
        """Measured size and speed of every model the seed's prune stage produced."""
        return self.predictions / f"efficiency-seed-{seed}.csv"

    # --- evaluate / analyze -------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return Path("metrics") / self.name

    @property
    def plots(self) -> Path:
        return Path("plots") / self.name

    @property
    @writes("analyze")
    def figures(self) -> Path:
        return self.plots / "figures"

    @property
    @writes("evaluate")
    def per_class(self) -> Path:
        return self.metrics / "per_class.csv"

    @property
    @writes("evaluate")
    def map_by_seed(self) -> Path:
        return self.metrics / "map_by_seed.csv"

    @property
    @writes("evaluate")
    def evaluation(self) -> Path:
        return self.metrics / "evaluate.json"

    @property
    @writes("evaluate")
    def map_curve(self) -> Path:
        return self.plots / "map_vs_sparsity.csv"

    @property
    @writes("analyze")
    def summary(self) -> Path:
        return self.metrics / "summary.json"

    @property
    @writes("analyze")
    def pies(self) -> Path:
        return self.metrics / "pies.csv"

    @property
    @writes("analyze")
    def forgettability(self) -> Path:
        return self.metrics / "forgettability.csv"

    @property
    @writes("analyze")
    def efficiency(self) -> Path:
        """Every seed's efficiency rows, joined with the accuracy of the same model."""
        return self.metrics / "efficiency.csv"

    @property
    @writes("analyze")
    def class_loss_tests(self) -> Path:
        """Per (method, level, class): the paired test of a relative AP loss beyond the tolerance."""
        return self.metrics / "class_loss_tests.csv"

    @property
    @writes("analyze")
    def pareto(self) -> Path:
        """One point per (method, level): measured latency and bytes against mAP and the worst class."""
        return self.plot_table("pareto")

    # The analyze stage's long tables for `dvc plots` (dvc.yaml's `plots:` names them).
    forgettability_curves_table = _plot_table_entry("analyze", "forgettability_curves")
    forgetting_vs_frequency_table = _plot_table_entry("analyze", "forgetting_vs_frequency")
    fcd_pairs_table = _plot_table_entry("analyze", "fcd_pairs")
    pie_class_ratios_table = _plot_table_entry("analyze", "pie_class_ratios")
    pie_findings_ratios_table = _plot_table_entry("analyze", "pie_findings_ratios")
    weight_histogram_table = _plot_table_entry("analyze", "weight_histogram")

    @property
    @writes("evaluate")
    def ap_resamples(self) -> Path:
        """The evaluate stage's AP of every block for every bootstrap resample (analyze reads it)."""
        return Path("data/bootstrap") / self.name / "ap_resamples.npz"

    @property
    def report_dir(self) -> Path:
        return Path("reports") / self.name

    @property
    @writes("report")
    def findings_md(self) -> Path:
        """The report stage's findings table (markdown, figures linked by relative path)."""
        return self.report_dir / "findings.md"

    @property
    @writes("report")
    def findings_json(self) -> Path:
        """The same findings, machine-readable (a DVC metric: ``dvc exp show`` lists it)."""
        return self.report_dir / "findings.json"

    @property
    @writes("deployment")
    def deployment_md(self) -> Path:
        """The deployment stage's page: operating points, per-disease losses, bytes and latency."""
        return self.report_dir / "deployment.md"

    @property
    @writes("deployment")
    def deployment_json(self) -> Path:
        return self.report_dir / "deployment.json"

    @property
    @writes("deployment")
    def deployment_figure(self) -> Path:
        """Per method, diseases x levels heatmap of the median relative AP change."""
        return self.report_dir / "deployment.png"

    def plot_table(self, stem: str) -> Path:
        """``plots/<name>/<stem>.csv``: a long table for ``dvc plots``."""
        return self.plots / f"{stem}.csv"

    # --- reader study -------------------------------------------------------------------
    @property
    def reader(self) -> Path:
        """``data/reader/<name>``: forms/, manifest.csv, key.csv, sample.json, simulated/."""
        return Path("data/reader") / self.name

    @property
    @writes("reader-sample")
    def reader_forms(self) -> Path:
        """One HTML form per reader."""
        return self.reader / "forms"

    @property
    @writes("reader-sample")
    def reader_manifest(self) -> Path:
        return self.reader / "manifest.csv"

    @property
    @writes("reader-sample")
    def reader_key(self) -> Path:
        """Which case is which image and group (kept from the readers)."""
        return self.reader / "key.csv"

    @property
    @writes("reader-sample")
    def reader_sample_info(self) -> Path:
        return self.reader / "sample.json"

    @property
    @writes("reader-simulate")
    def reader_simulated(self) -> Path:
        """The simulated readers' answer files (or a README saying there are none)."""
        return self.reader / "simulated"

    @property
    @writes("reader-analyze")
    def reader_json(self) -> Path:
        return self.metrics / "reader.json"

    @property
    @writes("reader-analyze")
    def reader_answers(self) -> Path:
        return self.metrics / "reader_answers.csv"

    @property
    @writes("reader-analyze")
    def reader_validation(self) -> Path:
        return self.metrics / "reader_validation.json"

    @property
    @writes("reader-analyze")
    def reader_ratings(self) -> Path:
        return self.plots / "reader_ratings.csv"

    @property
    @writes("reader-analyze")
    def reader_figure(self) -> Path:
        return self.plots / "reader_study.png"

    # --- the opt-in PIE treatment study (studies/pie-treatment/dvc.yaml) ---------------
    @property
    def pie_study(self) -> Path:
        return Path("data/pie_treatment") / self.name

    @writes("pie-fold", PIE_STUDY)
    def pie_fold_predictions(self, fold: int, seed: int) -> Path:
        """Predictions of fold ``fold``'s training images by the seed's model trained on the other folds."""
        return self.pie_study / "folds" / f"fold-{fold}" / f"seed-{seed}.parquet"

    @property
    @writes("pie-score", PIE_STUDY)
    def pie_train_scores(self) -> Path:
        """Every training image: fold, out-of-fold Spearman correlation, is_pie (+ truth)."""
        return self.metrics / "pie_train_scores.csv"

    @property
    @writes("pie-score", PIE_STUDY)
    def pie_train_json(self) -> Path:
        return self.metrics / "pie_train.json"

    @writes("pie-retrain", PIE_STUDY)
    def pie_treatment_dir(self, treatment: str, seed: int) -> Path:
        """``predictions.parquet`` (test set, L1 at every level), ``history.csv``, ``train_set.json``."""
        return self.pie_study / treatment / f"seed-{seed}"

    @writes("pie-retrain", PIE_STUDY)
    def pie_treatment_predictions(self, treatment: str, seed: int) -> Path:
        return self.pie_treatment_dir(treatment, seed) / "predictions.parquet"

    @writes("pie-retrain", PIE_STUDY)
    def pie_treatment_history(self, treatment: str, seed: int) -> Path:
        return self.pie_treatment_dir(treatment, seed) / "history.csv"

    @writes("pie-retrain", PIE_STUDY)
    def pie_treatment_train_set(self, treatment: str, seed: int) -> Path:
        """What the treatment did to the training set (rows dropped, upweighted)."""
        return self.pie_treatment_dir(treatment, seed) / "train_set.json"

    @property
    @writes("pie-report", PIE_STUDY)
    def pie_treatment_json(self) -> Path:
        return self.metrics / "pie_treatment.json"

    @property
    @writes("pie-report", PIE_STUDY)
    def pie_treatment_per_class(self) -> Path:
        """``treatment, seed, level, class_name, ap, auroc, f1`` of every treated model."""
        return self.metrics / "pie_treatment_per_class.csv"

    @property
    @writes("pie-report", PIE_STUDY)
    def pie_treatment_ap_change(self) -> Path:
        return self.plot_table("pie_treatment_ap_change")

    @property
    @writes("pie-report", PIE_STUDY)
    def pie_treatment_figure(self) -> Path:
        return self.plots / "pie_treatment.png"

    # --- `cxrprune export` (a tool, not a stage): one deployable artifact on demand ----------
    def artifact_file(self, method: str, level: float, seed: int, suffix: str) -> Path:
        """Where ``cxrprune export`` writes an artifact unless told otherwise (git-ignored)."""
        return Path("data/artifacts") / self.name / f"seed-{seed}" / f"{method}-{level:g}{suffix}"

    # --- the opt-in frequency intervention study (studies/frequency-intervention/dvc.yaml) ----
    @property
    def intervention_study(self) -> Path:
        return Path("data/intervention") / self.name

    @writes("intervention-train", INTERVENTION_STUDY)
    def intervention_dir(self, arm: str, seed: int) -> Path:
        """``predictions.parquet`` (test set, L1 at every level), ``history.csv``, ``train_set.json``."""
        return self.intervention_study / arm / f"seed-{seed}"

    @writes("intervention-train", INTERVENTION_STUDY)
    def intervention_predictions(self, arm: str, seed: int) -> Path:
        return self.intervention_dir(arm, seed) / "predictions.parquet"

    @writes("intervention-train", INTERVENTION_STUDY)
    def intervention_history(self, arm: str, seed: int) -> Path:
        return self.intervention_dir(arm, seed) / "history.csv"

    @writes("intervention-train", INTERVENTION_STUDY)
    def intervention_train_set(self, arm: str, seed: int) -> Path:
        """The arm's rare classes and the positives the loss saw."""
        return self.intervention_dir(arm, seed) / "train_set.json"

    @property
    @writes("intervention-report", INTERVENTION_STUDY)
    def intervention_json(self) -> Path:
        return self.metrics / "frequency_intervention.json"

    @property
    @writes("intervention-report", INTERVENTION_STUDY)
    def intervention_per_class(self) -> Path:
        """Per class: its half, training positives, dense AUROC and forgetting in each arm, the contrasts."""
        return self.metrics / "frequency_intervention_per_class.csv"

    @property
    @writes("intervention-report", INTERVENTION_STUDY)
    def intervention_figure(self) -> Path:
        return self.plots / "frequency_intervention.png"


def layout(name: str) -> Layout:
    return Layout(name)


def _writer(entry: str) -> tuple[str, str | None] | None:
    attr = Layout.__dict__.get(entry)
    fn = attr.fget if isinstance(attr, property) else attr
    return getattr(fn, "writer", None)


def _arity(entry: str) -> int:
    attr = Layout.__dict__[entry]
    return 0 if isinstance(attr, property) else attr.__code__.co_argcount - 1


def entries() -> tuple[str, ...]:
    """The names of the Layout entries some stage writes."""
    return tuple(n for n in Layout.__dict__ if _writer(n) is not None)


def written_by(stage: str) -> tuple[str, ...]:
    """The Layout entries stage ``stage`` writes, in the order this module lists them."""
    return tuple(n for n in entries() if _writer(n)[0] == stage)


def producer(entry: str, *item: object) -> str:
    """The ``dvc repro`` target that writes Layout entry ``entry``: ``evaluate``;
    ``prune@3`` with the entry's arguments (``producer("predictions_file", 3)``), the whole
    matrix stage without them (``prune``); a study's as ``studies/.../dvc.yaml:pie-score``."""
    writer = _writer(entry)
    if writer is None:
        raise KeyError(f"no stage writes Layout.{entry}")
    if item and len(item) != _arity(entry):
        raise TypeError(f"Layout.{entry} takes {_arity(entry)} argument(s), got {item}")
    stage, study = writer
    target = f"{stage}@{'-'.join(str(i) for i in item)}" if item else stage
    return f"{study}:{target}" if study else target


# Tokens a path pattern is built with: a Layout entry called with them shows where its
# data name and arguments go.
_NAME, _ARG = "\x00name\x00", "\x00arg{}\x00"


def _pattern(entry: str) -> re.Pattern:
    value = getattr(Layout(_NAME), entry)
    n = _arity(entry)
    path = value(*(_ARG.format(i) for i in range(n))) if n else value
    text = re.escape(Path(path).as_posix()).replace(re.escape(_NAME), "[^/]+")
    for i in range(n):
        text = text.replace(re.escape(_ARG.format(i)), f"(?P<a{i}>[^/]+)")
    # A path under the repository root or a copy of it; a file inside a directory entry too.
    return re.compile(f"(?:^|/){text}(?:/.*)?$")


def producer_of(path: str | Path) -> str | None:
    """The ``dvc repro`` target that writes ``path`` (a Layout path of any data name, or a
    file inside one), from the most specific entry that holds it; None when no stage does."""
    text = Path(path).as_posix()
    best: tuple[int, str] | None = None
    for entry in entries():
        pattern = _pattern(entry)
        m = pattern.search(text)
        if m and (best is None or len(pattern.pattern) > best[0]):
            items = [m.group(f"a{i}") for i in range(_arity(entry))]
            best = (len(pattern.pattern), producer(entry, *items))
    return best[1] if best is not None else None


# Each finding's false-positive rate and power on planted effects (`cxrprune validate`, committed).
VALIDATION = Path("benchmarks") / "results" / "verdicts.json"


def compare_outputs(name: str = "compare") -> tuple[Path, Path, Path]:
    """`cxrprune compare --name NAME` (a tool, not a stage): the table ``reports/NAME.md``, what it
    read (``reports/NAME/<experiment>/findings.json``, ``params.yaml``) and ``reports/NAME.png``;
    one name per comparison, e.g. the calibration's planted and negative-control draws apart."""
    return Path("reports") / f"{name}.md", Path("reports") / name, Path("reports") / f"{name}.png"


COMPARE_MD, COMPARE_SNAPSHOT, COMPARE_FIGURE = compare_outputs()
