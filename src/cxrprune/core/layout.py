"""Every path a stage reads or writes, in one place.

``dvc.yaml`` names the same paths with ``${data.name}``; ``tests/test_layout.py`` checks that
each ``outs``/``metrics`` entry of ``dvc.yaml`` is a path of this module, so the pipeline
definition, the stages and the tests agree by construction. Paths are relative to the
repository root (stages run there: ``dvc repro`` sets the working directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYNTHETIC_ROOT = Path("data/raw/synthetic")  # the generate stage's output (NIH-CXR-LT layout)
RESUME_ROOT = Path("data/.resume")  # outside every DVC output: DVC deletes outputs before a rerun
RAY_LOG_DIR = Path(".dvc/tmp/ray-logs")  # inside DVC's own git-ignored tmp folder

# Figures of the analyze stage, in plots/<name>/figures/.
ANALYZE_FIGURES = ("map_vs_sparsity.png", "forgettability_curves.png", "forgetting_vs_frequency.png", "fcd.png",
                   "pie_ratios.png", "weight_histogram.png", "pareto.png")


@dataclass(frozen=True)
class Layout:
    """The outputs of the dataset ``name`` (``data.name`` in params.yaml)."""

    name: str

    # --- prepare ------------------------------------------------------------------------
    @property
    def prepared(self) -> Path:
        """``labels_{split}.parquet``, ``images_{split}.npy``, ``meta.json`` (+ ``truth.parquet``)."""
        return Path("data/prepared") / self.name

    @property
    def truth(self) -> Path:
        """Synthetic data only: which labels were flipped and which images degraded."""
        return self.prepared / "truth.parquet"

    # --- train@seed ---------------------------------------------------------------------
    @property
    def models(self) -> Path:
        return Path("data/models") / self.name

    def model_dir(self, seed: int) -> Path:
        return self.models / f"seed-{seed}"

    def model_file(self, seed: int) -> Path:
        return self.model_dir(seed) / "model.pt"

    def history(self, seed: int) -> Path:
        return self.model_dir(seed) / "history.csv"

    def run_record(self, seed: int) -> Path:
        """``run.json``: the seed's MLflow run id, experiment id and tracking URI."""
        return self.model_dir(seed) / "run.json"

    def resume_file(self, seed: int) -> Path:
        return RESUME_ROOT / self.name / f"train-seed-{seed}.pt"

    # --- prune@seed ---------------------------------------------------------------------
    @property
    def predictions(self) -> Path:
        return Path("data/predictions") / self.name

    def predictions_file(self, seed: int) -> Path:
        return self.predictions / f"seed-{seed}.parquet"

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
    def figures(self) -> Path:
        return self.plots / "figures"

    @property
    def per_class(self) -> Path:
        return self.metrics / "per_class.csv"

    @property
    def map_by_seed(self) -> Path:
        return self.metrics / "map_by_seed.csv"

    @property
    def evaluation(self) -> Path:
        return self.metrics / "evaluate.json"

    @property
    def map_curve(self) -> Path:
        return self.plots / "map_vs_sparsity.csv"

    @property
    def summary(self) -> Path:
        return self.metrics / "summary.json"

    @property
    def pies(self) -> Path:
        return self.metrics / "pies.csv"

    @property
    def forgettability(self) -> Path:
        return self.metrics / "forgettability.csv"

    @property
    def efficiency(self) -> Path:
        """Every seed's efficiency rows, joined with the accuracy of the same model."""
        return self.metrics / "efficiency.csv"

    @property
    def class_loss_tests(self) -> Path:
        """Per (method, level, class): the paired test of a relative AP loss beyond the tolerance."""
        return self.metrics / "class_loss_tests.csv"

    @property
    def pareto(self) -> Path:
        """One point per (method, level): measured latency and bytes against mAP and the worst class."""
        return self.plot_table("pareto")

    @property
    def ap_resamples(self) -> Path:
        """The evaluate stage's AP of every block for every bootstrap resample (analyze reads it)."""
        return Path("data/bootstrap") / self.name / "ap_resamples.npz"

    @property
    def report_dir(self) -> Path:
        return Path("reports") / self.name

    @property
    def findings_md(self) -> Path:
        """The report stage's findings table (markdown, figures linked by relative path)."""
        return self.report_dir / "findings.md"

    @property
    def findings_json(self) -> Path:
        """The same findings, machine-readable (a DVC metric: ``dvc exp show`` lists it)."""
        return self.report_dir / "findings.json"

    @property
    def deployment_md(self) -> Path:
        """The deployment stage's page: operating points, per-disease losses, bytes and latency."""
        return self.report_dir / "deployment.md"

    @property
    def deployment_json(self) -> Path:
        return self.report_dir / "deployment.json"

    @property
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
    def reader_json(self) -> Path:
        return self.metrics / "reader.json"

    @property
    def reader_answers(self) -> Path:
        return self.metrics / "reader_answers.csv"

    @property
    def reader_validation(self) -> Path:
        return self.metrics / "reader_validation.json"

    @property
    def reader_ratings(self) -> Path:
        return self.plots / "reader_ratings.csv"

    @property
    def reader_figure(self) -> Path:
        return self.plots / "reader_study.png"

    # --- the opt-in PIE treatment study (studies/pie-treatment/dvc.yaml) ---------------
    @property
    def pie_study(self) -> Path:
        return Path("data/pie_treatment") / self.name

    def pie_fold_predictions(self, fold: int, seed: int) -> Path:
        """Predictions of fold ``fold``'s training images by the seed's model trained on the other folds."""
        return self.pie_study / "folds" / f"fold-{fold}" / f"seed-{seed}.parquet"

    @property
    def pie_train_scores(self) -> Path:
        """Every training image: fold, out-of-fold Spearman correlation, is_pie (+ truth)."""
        return self.metrics / "pie_train_scores.csv"

    @property
    def pie_train_json(self) -> Path:
        return self.metrics / "pie_train.json"

    def pie_treatment_dir(self, treatment: str, seed: int) -> Path:
        """``predictions.parquet`` (test set, L1 at every level), ``history.csv``, ``train_set.json``."""
        return self.pie_study / treatment / f"seed-{seed}"

    @property
    def pie_treatment_json(self) -> Path:
        return self.metrics / "pie_treatment.json"

    @property
    def pie_treatment_per_class(self) -> Path:
        """``treatment, seed, sparsity, class_name, ap, auroc, f1`` of every treated model."""
        return self.metrics / "pie_treatment_per_class.csv"

    @property
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

    def intervention_dir(self, arm: str, seed: int) -> Path:
        """``predictions.parquet`` (test set, L1 at every level), ``history.csv``, ``train_set.json``."""
        return self.intervention_study / arm / f"seed-{seed}"

    @property
    def intervention_json(self) -> Path:
        return self.metrics / "frequency_intervention.json"

    @property
    def intervention_per_class(self) -> Path:
        """Per class: its half, training positives, dense AUROC and forgetting in each arm, the contrasts."""
        return self.metrics / "frequency_intervention_per_class.csv"

    @property
    def intervention_figure(self) -> Path:
        return self.plots / "frequency_intervention.png"


def layout(name: str) -> Layout:
    return Layout(name)


# Each finding's false-positive rate and power on planted effects (`cxrprune validate`, committed).
VALIDATION = Path("benchmarks") / "results" / "verdicts.json"


def compare_outputs(name: str = "compare") -> tuple[Path, Path, Path]:
    """`cxrprune compare --name NAME` (a tool, not a stage): the table ``reports/NAME.md``, what it
    read (``reports/NAME/<experiment>/findings.json``, ``params.yaml``) and ``reports/NAME.png``;
    one name per comparison, e.g. the calibration's planted and negative-control draws apart."""
    return Path("reports") / f"{name}.md", Path("reports") / name, Path("reports") / f"{name}.png"


COMPARE_MD, COMPARE_SNAPSHOT, COMPARE_FIGURE = compare_outputs()
