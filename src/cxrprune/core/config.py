"""Typed, validated configuration, loaded once from ``params.yaml``.

Each section of ``params.yaml`` maps to one frozen dataclass below. Unknown keys, wrong
types and out-of-range values raise :class:`~cxrprune.core.errors.ConfigError` naming the key
(``train.lr``) and what is expected, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml

from cxrprune.core import catalog
from cxrprune.core.errors import ConfigError
from cxrprune.core.layout import Layout

PARAMS_FILE = "params.yaml"

# Smallest input each architecture accepts: five stride-2 steps must leave a >= 1 px map.
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 4096  # NIH ChestX-ray14 originals are 1024 px; the paper trains at 256
MAX_COUNT = 1024  # processes and threads
MAX_BATCH = 1 << 20
MAX_STEPS = 1_000_000  # epochs, patience


@dataclass(frozen=True)
class Choices:
    """Marks a ``str`` field whose value must be a name of the catalog (:mod:`cxrprune.core.catalog`):
    ``Annotated[str, Choices(catalog.method_names)]``. Read when params are loaded, so an entry
    registered before then is accepted, and refused with the same message as a ``Literal``."""

    names: Callable[[], tuple[str, ...]]


MethodName = Annotated[str, Choices(catalog.method_names)]
ArchName = Annotated[str, Choices(catalog.architecture_names)]
SourceName = Annotated[str, Choices(catalog.source_names)]


def default_levels() -> list[float]:
    """The paper's 20 sparsity levels, k = 0, 0.05, ..., 0.95."""
    return [round(i * 0.05, 2) for i in range(20)]


@dataclass(frozen=True)
class SourceOptions:
    """Layout options of the non-default sources (``data.options`` in params.yaml).

    Empty values mean "the source's default"; which keys apply depends on ``data.source``
    (a key that does not apply to the chosen source is refused when the source is read):

    - ``labels``: where the label CSVs are, relative to ``data.root`` or absolute: a folder
      holding the source's standard file names (nih-cxr-lt, mimic-cxr-lt), one CSV file with
      a split column (csv), or a pattern with ``{split}`` naming one CSV per split
      (all three). Default: ``data.root`` itself (csv: ``labels.csv``, else
      ``labels_{split}.csv``).
    - ``image_column``: the CSV column holding each image's path relative to ``data.root``
      (mimic-cxr-lt, csv; default ``path``). It is also the image id.
    - ``patient_column``: the patient id column (mimic-cxr-lt: default ``subject_id`` or
      ``subj_id``, whichever exists; csv: default ``patient_id``/``subject_id``/``subj_id``
      if present, else every image is its own patient).
    - ``split_column``: the split column of a single csv file (default ``split``; values
      ``train``, ``val`` (or ``valid``/``validate``/``validation``), ``test``).
    - ``classes``: the class columns in the order to use. Empty: the canonical order
      (nih-cxr-lt, mimic-cxr-lt, medmnist) or, for csv, every column other than the image,
      patient and split columns, in file order. For the two CXR-LT sources a non-empty list
      must be a reordering of the canonical classes; for medmnist it names the label columns.
    - ``npz``: the MedMNIST ``.npz`` file, relative to ``data.root`` or absolute (default:
      the only ``*.npz`` file in ``data.root``).
    """

    labels: str = ""
    image_column: str = ""
    patient_column: str = ""
    split_column: str = ""
    classes: list[str] = field(default_factory=list)
    npz: str = ""

    def __post_init__(self) -> None:
        for key in ("labels", "image_column", "patient_column", "split_column", "npz"):
            value = getattr(self, key)
            _require(value == value.strip() and "\n" not in value, f"data.options.{key}",
                     "a value without surrounding spaces or line breaks", value)
        if "{" in self.labels or "}" in self.labels:
            _require(self.labels.count("{") == 1 and self.labels.count("}") == 1 and "{split}" in self.labels,
                     "data.options.labels", "a path, or a pattern with exactly one {split}", self.labels)
        _require(self.npz == "" or self.npz.endswith(".npz"), "data.options.npz",
                 "empty or a path to a .npz file", self.npz)
        _require(all(c.strip() != "" and c == c.strip() for c in self.classes), "data.options.classes",
                 "non-empty class names without surrounding spaces", self.classes)
        _require(len(set(self.classes)) == len(self.classes), "data.options.classes", "a list without duplicates",
                 self.classes)
        columns = [c for c in (self.image_column, self.patient_column, self.split_column) if c]
        _require(len(set(columns)) == len(columns), "data.options",
                 "distinct image_column, patient_column and split_column", columns)
        clash = [c for c in columns if c in self.classes]
        _require(not clash, "data.options.classes", "names other than the image, patient and split columns",
                 clash)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the pipeline reads and at what resolution it trains."""

    name: str = "synthetic"
    source: SourceName = "nih-cxr-lt"
    root: str = "data/raw/synthetic"
    image_size: int = 48
    workers: int = 0  # 0 = all cores
    options: SourceOptions = field(default_factory=SourceOptions)  # layout of mimic-cxr-lt/csv/medmnist

    def __post_init__(self) -> None:
        _require(self.name.strip() != "" and "/" not in self.name and "\\" not in self.name
                 and self.name not in (".", ".."), "data.name", "a non-empty folder name without '/'", self.name)
        _require(MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size",
                 f"an integer >= {MIN_IMAGE_SIZE} (ResNets downsample 32x) and <= {MAX_IMAGE_SIZE}", self.image_size)
        _require(0 <= self.workers <= MAX_COUNT, "data.workers", f"0 (all cores) or a count up to {MAX_COUNT}",
                 self.workers)

    @property
    def prepared_dir(self) -> Path:
        return Layout(self.name).prepared



# The synthetic generator's routes (datasets/synth/mechanisms.py implements them): one list of names
# for config validation and the generator.
MECHANISMS = ("frequency", "label_noise", "quality", "ambiguity", "mottle")

@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the embedded synthetic CXR-LT generator."""

    seed: int = 0
    n_patients: int = 1500
    images_per_patient: float = 3.0  # mean; each patient has 1 + Poisson(mean - 1) images
    val_fraction: float = 0.15  # of patients
    test_fraction: float = 0.2  # of patients
    image_size: int = 128
    min_positives: int = 4  # per class and split, so every class can be evaluated
    min_train_positives: int = 1  # per class in train (the larger of this and min_positives), so it can be learned
    # Power of the test-set statistics without touching train or val: a per-class floor for test
    # only (0: min_positives) and test-only patients added after the first n_patients.
    min_test_positives: int = 0
    extra_test_patients: int = 0
    label_noise: float = 0.05  # fraction of images with one flipped label
    degrade_rate: float = 0.1  # fraction of images with blur/noise/exposure degradation
    signal: float = 1.0  # global contrast of the findings' visual signatures
    # Routes planted from the images to what the analyses measure (datasets/synth/mechanisms.py):
    # [] is the negative control; each route is linear in `effect`.
    mechanisms: list[Literal[MECHANISMS]] = field(
        default_factory=lambda: ["label_noise", "quality"])
    effect: float = 1.0

    def __post_init__(self) -> None:
        _require(0 <= self.seed < 2**32, "synthetic.seed", "an integer in [0, 2**32)", self.seed)
        _require(20 <= self.n_patients <= 10_000_000, "synthetic.n_patients", "an integer in [20, 10000000]",
                 self.n_patients)
        _require(1 <= self.images_per_patient <= 100, "synthetic.images_per_patient", "a number in [1, 100]",
                 self.images_per_patient)
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            _require(0 < v < 0.5, f"synthetic.{key}", "a number in (0, 0.5)", v)
        _require(MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE, "synthetic.image_size",
                 f"an integer >= {MIN_IMAGE_SIZE} and <= {MAX_IMAGE_SIZE}", self.image_size)
        _require(1 <= self.min_positives <= 10_000, "synthetic.min_positives", "an integer in [1, 10000]",
                 self.min_positives)
        _require(1 <= self.min_train_positives <= 10_000, "synthetic.min_train_positives",
                 "an integer in [1, 10000]", self.min_train_positives)
        _require(0 <= self.min_test_positives <= 10_000, "synthetic.min_test_positives",
                 "an integer in [0, 10000] (0 = synthetic.min_positives)", self.min_test_positives)
        _require(0 <= self.extra_test_patients <= 10_000_000, "synthetic.extra_test_patients",
                 "an integer in [0, 10000000]", self.extra_test_patients)
        for key in ("label_noise", "degrade_rate"):
            v = getattr(self, key)
            _require(0 <= v < 1, f"synthetic.{key}", "a rate in [0, 1)", v)
        _require(0 < self.signal <= 100, "synthetic.signal", "a positive number (at most 100)", self.signal)
        _require(len(set(self.mechanisms)) == len(self.mechanisms), "synthetic.mechanisms",
                 f"a list of {', '.join(MECHANISMS)} without duplicates ([] = nothing planted)",
                 self.mechanisms)
        _require(isinstance(self.effect, (int, float)) and not isinstance(self.effect, bool)
                 and 0 <= self.effect <= 1, "synthetic.effect",
                 "a number in [0, 1] (0 = nothing planted, 1 = each listed mechanism at full strength)", self.effect)


@dataclass(frozen=True)
class TrainConfig:
    """Training of one seed (the paper: ResNet50, Adam 1e-4, batch 256, patience 15)."""

    arch: ArchName = "resnet18"
    pretrained: str = "none"  # none | imagenet | path to a state-dict file
    epochs: int = 8
    patience: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    rotation: float = 15.0  # degrees, uniform in [-rotation, rotation]
    hflip: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    # Speed levers (issue 14; measured in benchmarks/bench_train_speed.py). The defaults here
    # are the loop before them; params.yaml sets the measured ones.
    schedule: Literal["constant", "cosine"] = "constant"  # learning rate after the warm-up
    warmup_epochs: float = 0.0  # linear warm-up of the learning rate, in epochs (fractions allowed)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # auto: see cxrprune.core.numerics
    compile: bool = False  # torch.compile of the training forward/backward
    fused_adam: bool = False  # Adam's fused kernel instead of its per-tensor loop (cxrprune.training.loop.adam)
    ema_decay: float = 0.0  # exponential moving average of the weights per step (0: off); validated and kept
    # gemm: small-output convolutions' weight gradient as one matrix product (cxrprune.training.conv_grad);
    # CPU, fp32 and without train.compile only: elsewhere torch's own
    conv_weight_grad: Literal["native", "gemm"] = "native"
    checkpoint_every_s: float = 0.0  # resume state written after an epoch if this long since the last (0: every epoch)
    # CUDA: cuDNN's deterministic kernels and no autotuning, so a seed gives the same weights on the
    # same GPU (cxrprune.core.numerics.device_settings); false: autotuned, not bit-reproducible. The
    # CPU is deterministic either way.
    deterministic: bool = True

    def __post_init__(self) -> None:
        _require(1 <= self.epochs <= MAX_STEPS, "train.epochs", f"an integer in [1, {MAX_STEPS}]", self.epochs)
        _require(0 <= self.warmup_epochs < self.epochs, "train.warmup_epochs",
                 f"a number of epochs in [0, train.epochs = {self.epochs})", self.warmup_epochs)
        _require(1 <= self.patience <= MAX_STEPS, "train.patience", f"an integer in [1, {MAX_STEPS}]", self.patience)
        _require(1 <= self.batch_size <= MAX_BATCH, "train.batch_size", f"an integer in [1, {MAX_BATCH}]",
                 self.batch_size)
        _require(0 < self.lr <= 10, "train.lr", "a positive number (at most 10)", self.lr)
        _require(0 <= self.ema_decay < 1, "train.ema_decay", "0 (off) or a decay in (0, 1), e.g. 0.99",
                 self.ema_decay)
        _require(0 <= self.weight_decay <= 10, "train.weight_decay", "a number in [0, 10]", self.weight_decay)
        _require(0 <= self.rotation <= 180, "train.rotation", "degrees in [0, 180]", self.rotation)
        _require(0 <= self.checkpoint_every_s <= 86400, "train.checkpoint_every_s", "seconds in [0, 86400]",
                 self.checkpoint_every_s)
        _require(0 <= self.threads <= MAX_COUNT, "train.threads", f"0 (default) or a count up to {MAX_COUNT}",
                 self.threads)
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 "train.device", "auto, cpu, cuda or cuda:N", self.device)


@dataclass(frozen=True)
class PruneConfig:
    """Post-training compression: every method of ``methods`` at its levels (see
    ``cxrprune.compression.methods``; int8/fp16/bf16 have one level, 0.0)."""

    methods: list[MethodName] = field(default_factory=lambda: [catalog.DENSE_REFERENCE.method, "random"])
    levels: list[float] = field(default_factory=default_levels)
    batch_size: int = 512
    # Lower precision is an option only: its AP deviation is measured in benchmarks/README.md.
    autocast: Literal["none", "bf16", "fp16"] = "none"
    allow_tf32: bool = False  # CUDA only
    random_masks: Literal["independent", "nested"] = "independent"  # random: a new mask per level, or nested ones
    finetune_epochs: int = 1  # l1_finetune: training epochs per level with the mask fixed
    calibration_images: int = 256  # int8: validation images that calibrate the activation ranges
    efficiency_threads: int = 1  # CPU threads (torch and ONNX Runtime) of the latency/throughput timing
    efficiency_repeats: int = 3  # timed repeats of the batch-64 throughput (after one warm-up); the median
    latency_rounds: int = 15  # batch-1 latency: rounds interleaved with the dense model (ratio and its interval)

    def __post_init__(self) -> None:
        _require(len(self.methods) > 0, "prune.methods", "a non-empty list of compression methods", self.methods)
        _require(len(set(self.methods)) == len(self.methods), "prune.methods", "no duplicates", self.methods)
        _require(catalog.DENSE_REFERENCE.method in self.methods, "prune.methods",
                 f"a list that contains {catalog.DENSE_REFERENCE.method} (the analyses use it)", self.methods)
        _require(len(self.levels) >= 2, "prune.levels", "at least two levels, 0 among them", self.levels)
        for k in self.levels:
            _require(0 <= k < 1, "prune.levels", "sparsities in [0, 1)", k)
        _require(catalog.DENSE_REFERENCE.level in self.levels, "prune.levels", "a list that contains 0 (the dense "
                 "model)", self.levels)
        _require(sorted(set(self.levels)) == list(self.levels), "prune.levels",
                 "strictly increasing values", self.levels)
        _require(1 <= self.batch_size <= MAX_BATCH, "prune.batch_size", f"an integer in [1, {MAX_BATCH}]",
                 self.batch_size)
        _require(0 <= self.finetune_epochs <= MAX_STEPS, "prune.finetune_epochs", f"an integer in [0, {MAX_STEPS}]",
                 self.finetune_epochs)
        _require(1 <= self.calibration_images <= 1_000_000, "prune.calibration_images", "an integer in [1, 1000000]",
                 self.calibration_images)
        _require(1 <= self.efficiency_threads <= MAX_COUNT, "prune.efficiency_threads",
                 f"an integer in [1, {MAX_COUNT}]", self.efficiency_threads)
        _require(1 <= self.efficiency_repeats <= 1000, "prune.efficiency_repeats", "an integer in [1, 1000]",
                 self.efficiency_repeats)
        # The sign test's 95% interval of a median needs 6 values (with 5, [min, max] covers 93.75%).
        _require(6 <= self.latency_rounds <= 1000, "prune.latency_rounds", "an integer in [6, 1000]",
                 self.latency_rounds)


@dataclass(frozen=True)
class EvaluateConfig:
    """Per-class metrics, the paired test of mAP(k) against mAP(0) and its non-inferiority."""

    test: Literal["wilcoxon", "ttest"] = "wilcoxon"
    correction: Literal["holm", "none"] = "holm"
    alpha: float = 0.05
    f1_threshold: float = 0.5
    # Safe sparsity is shown, not assumed: a level is safe when its mAP is shown to lose less than
    # this fraction of the dense mAP (non-inferiority, fixed sequence; analysis/evaluate.py).
    margin: float = 0.05

    def __post_init__(self) -> None:
        _require(0 < self.alpha < 1, "evaluate.alpha", "a number in (0, 1)", self.alpha)
        _require(0 < self.margin < 1, "evaluate.margin", "a relative mAP loss in (0, 1)", self.margin)
        _require(0 < self.f1_threshold < 1, "evaluate.f1_threshold", "a number in (0, 1)", self.f1_threshold)


@dataclass(frozen=True)
class AnalyzeConfig:
    """Forgettability curves, FCD and PIEs as defined by the reference code."""

    drop_threshold: float = 0.2  # a "20% drop": curve(k) < -drop_threshold
    fcd_distance: Literal["euclidean", "mse"] = "euclidean"
    fcd_weighting: Literal["label", "plain"] = "label"
    pie_sparsity: float = 0.9
    pie_fraction: float = 0.05
    histogram_bins: int = 100
    # Operating points: the non-inferiority margin of every class's relative AP change (a level is
    # acceptable when every class is shown to lose less than this); the paper-style column beside
    # it calls a class "losing" when its change is significantly below -class_tolerance
    # (analysis/operating_points.py).
    class_tolerance: float = 0.05

    def __post_init__(self) -> None:
        _require(0 < self.class_tolerance < 1, "analyze.class_tolerance", "a relative AP loss in (0, 1)",
                 self.class_tolerance)
        _require(0 < self.drop_threshold < 1, "analyze.drop_threshold", "a number in (0, 1)", self.drop_threshold)
        _require(0 < self.pie_sparsity < 1, "analyze.pie_sparsity", "a sparsity in (0, 1)", self.pie_sparsity)
        _require(0 < self.pie_fraction < 0.5, "analyze.pie_fraction", "a fraction in (0, 0.5)", self.pie_fraction)
        _require(10 <= self.histogram_bins <= 1_000_000, "analyze.histogram_bins", "an integer in [10, 1000000]",
                 self.histogram_bins)


@dataclass(frozen=True)
class ReaderConfig:
    """The blinded reader study of PIEs (the paper: 6 forms of 20 PIEs + 20 non-PIEs)."""

    per_group: int = 20  # PIEs per form, and as many non-PIEs
    forms: int = 6
    seed: int = 0
    stratify: bool = True  # match each form's non-PIEs to its PIEs' findings
    image_size: int = 512  # longest side, in pixels, of the images embedded in a form
    simulate: bool = True  # simulated readers from the synthetic ground truth
    simulated_readers: int = 3
    answers_dir: str = "reader_answers"  # real exports (CSV or JSON) go here, committed to git
    duplicates: Literal["error", "latest"] = "error"  # a reader's conflicting answers to one case

    def __post_init__(self) -> None:
        _require(1 <= self.per_group <= 10_000, "reader.per_group", "an integer in [1, 10000]", self.per_group)
        _require(1 <= self.forms <= 10_000, "reader.forms", "an integer in [1, 10000]", self.forms)
        _require(0 <= self.seed < 2**31, "reader.seed", "an integer in [0, 2**31)", self.seed)
        _require(64 <= self.image_size <= 4096, "reader.image_size", "pixels in [64, 4096]", self.image_size)
        _require(0 <= self.simulated_readers <= 100, "reader.simulated_readers", "an integer in [0, 100]",
                 self.simulated_readers)
        _require(not self.simulate or self.simulated_readers >= 1, "reader.simulated_readers",
                 "an integer >= 1 when reader.simulate is true", self.simulated_readers)
        _require(self.answers_dir.strip() != "", "reader.answers_dir", "a non-empty folder path",
                 self.answers_dir)


PIE_TREATMENTS = ("baseline", "remove", "upweight", "remove_random")


@dataclass(frozen=True)
class PieTreatmentConfig:
    """The opt-in PIE retraining study (``studies/pie-treatment/dvc.yaml``): out-of-fold PIEs
    of the training set, then retraining with them kept, removed, upweighted, or with as many
    random images removed (the control)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Patient-disjoint folds of the training split for out-of-fold scoring: the fold ids
    # 0..K-1 (a list, so dvc.yaml can fan out over them with `matrix`); K = 2 by default.
    folds: list[int] = field(default_factory=lambda: [0, 1])
    fold_seed: int = 0  # draws the fold assignment
    weight: float = 3.0  # loss weight of a PIE under ``upweight``
    treatments: list[Literal["baseline", "remove", "upweight", "remove_random"]] = field(
        default_factory=lambda: list(PIE_TREATMENTS))
    epochs: int = 0  # 0 = train.epochs

    def __post_init__(self) -> None:
        _require_study_seeds(self.seeds, "pie_treatment.seeds")
        _require(2 <= len(self.folds) <= 100 and self.folds == list(range(len(self.folds))), "pie_treatment.folds",
                 "the fold ids 0..K-1 with K in [2, 100] (K=2: [0, 1]; the other folds train, one is scored)",
                 self.folds)
        _require(0 <= self.fold_seed < 2**32, "pie_treatment.fold_seed", "an integer in [0, 2**32)", self.fold_seed)
        _require(0 < self.weight <= 1000, "pie_treatment.weight", "a positive loss weight (at most 1000)",
                 self.weight)
        _require(len(set(self.treatments)) == len(self.treatments) and "baseline" in self.treatments,
                 "pie_treatment.treatments", f"distinct names of {', '.join(PIE_TREATMENTS)}, baseline among them",
                 self.treatments)
        _require(0 <= self.epochs <= MAX_STEPS, "pie_treatment.epochs", f"0 (train.epochs) or an integer up to "
                 f"{MAX_STEPS}", self.epochs)


INTERVENTION_ARMS = ("rare_a", "rare_b", "control")


@dataclass(frozen=True)
class InterventionConfig:
    """The opt-in frequency intervention study (``studies/frequency-intervention/dvc.yaml``):
    the classes are split at random into halves A and B; arm ``rare_a`` hides most training
    positives of the A classes from the loss, ``rare_b`` those of the B classes, ``control``
    hides nothing. Images are identical in every arm, so each class is rare in one arm and
    common in the other (:mod:`cxrprune.intervention.arms`)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    keep: float = 0.125  # fraction of a class's training positives its rare arm keeps in the loss (ceil)
    assign_seed: int = 0  # draws the class halves and which positives are hidden
    epochs: int = 0  # 0 = train.epochs

    def __post_init__(self) -> None:
        _require_study_seeds(self.seeds, "intervention.seeds")
        _require(0 < self.keep < 1, "intervention.keep", "a fraction in (0, 1) of the training positives kept "
                 "in a class's rare arm (0.125: hide 7 of 8)", self.keep)
        _require(0 <= self.assign_seed < 2**32, "intervention.assign_seed", "an integer in [0, 2**32)",
                 self.assign_seed)
        _require(0 <= self.epochs <= MAX_STEPS, "intervention.epochs", f"0 (train.epochs) or an integer up to "
                 f"{MAX_STEPS}", self.epochs)


@dataclass(frozen=True)
class ModelConfig:
    """Where ``train@<seed>`` gets its model: trained here, or a checkpoint the user already
    has, imported and verified (:mod:`cxrprune.training.checkpoint`). Its architecture is
    ``train.arch``, its input size ``data.image_size`` (ImageNet-normalised, 3 channels, as
    torchvision's models take)."""

    source: Literal["train", "checkpoint"] = "train"
    path: str = ""  # checkpoint: a state_dict file, this project's model.pt, or a whole saved torchvision module
    # checkpoint: the model's outputs in order, by name ([]: the names the file stores, as model.pt does)
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.source == "checkpoint":
            _require(self.path.strip() != "", "model.path", "the checkpoint file to import (model.source: checkpoint)",
                     self.path)
        _require(len(set(self.classes)) == len(self.classes), "model.classes", "class names without duplicates",
                 self.classes)


@dataclass(frozen=True)
class MlflowConfig:
    experiment: str = "cxrprune"
    tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite:///<repo root>/mlflow.db

    def __post_init__(self) -> None:
        _require(self.experiment.strip() != "", "mlflow.experiment", "a non-empty name", self.experiment)


@dataclass(frozen=True)
class BootstrapConfig:
    """Percentile-bootstrap confidence intervals of evaluate's and analyze's statistics
    (resampling test images, and seeds when there are at least 10: analysis/bootstrap.py)."""

    resamples: int = 1000  # 0: no intervals
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        _require(self.resamples == 0 or 100 <= self.resamples <= 100_000, "bootstrap.resamples",
                 "0 (no intervals) or an integer in [100, 100000]", self.resamples)
        _require(0 <= self.seed < 2**31, "bootstrap.seed", "an integer in [0, 2**31)", self.seed)
        _require(0.5 <= self.level < 1, "bootstrap.level", "a confidence level in [0.5, 1)", self.level)


@dataclass(frozen=True)
class Params:
    """The whole of ``params.yaml``."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    pie_treatment: PieTreatmentConfig = field(default_factory=PieTreatmentConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)

    def __post_init__(self) -> None:
        _require(len(self.seeds) > 0, "seeds", "a non-empty list of integers", self.seeds)
        _require(len(set(self.seeds)) == len(self.seeds), "seeds", "no duplicates", self.seeds)
        for s in self.seeds:
            _require(0 <= s < 2**31, "seeds", "integers in [0, 2**31)", s)
        if self.model.source == "checkpoint":
            # One model: seeds would be copies of it, and a seed-to-seed test would see no variance.
            _require(len(self.seeds) == 1, "seeds", "one seed (e.g. [0]) with model.source: checkpoint, which "
                     "imports one model", self.seeds)
        _require(self.analyze.pie_sparsity in self.prune.levels, "analyze.pie_sparsity",
                 f"one of prune.levels {self.prune.levels}", self.analyze.pie_sparsity)
        arch = catalog.ARCHITECTURES[self.train.arch]
        low, multiple = arch.min_image_size, arch.size_multiple
        _require(self.data.image_size >= low and self.data.image_size % multiple == 0, "data.image_size",
                 f"at least {low}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
                 + f" for train.arch {self.train.arch}", self.data.image_size)
        if arch.imagenet_image_size and self.train.pretrained == "imagenet":
            _require(self.data.image_size == arch.imagenet_image_size, "data.image_size",
                     f"{arch.imagenet_image_size} for {arch.name} with ImageNet weights", self.data.image_size)

    @property
    def layout(self) -> Layout:
        """Every output path of this dataset's stages (:mod:`cxrprune.core.layout`)."""
        return Layout(self.data.name)

    @property
    def nonzero_levels(self) -> list[float]:
        return [k for k in self.prune.levels if k > 0]


def load_params(path: str | os.PathLike = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; every problem is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the repository root or pass --params") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    if raw is None:
        raw = {}
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a {type(key).__name__} used as a key", key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_show(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def from_dict(raw: Any) -> Params:
    """Build validated :class:`Params` from a mapping (as parsed from YAML)."""
    return _build(Params, raw, "")


def to_dict(params: Params) -> dict[str, Any]:
    return dataclasses.asdict(params)


def _require(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {_show(got)}")


def _require_study_seeds(seeds: list[int], key: str) -> None:
    """A study's own seeds: non-empty, distinct, each in [0, 2**31) as the top-level ``seeds``."""
    _require(len(seeds) > 0 and len(set(seeds)) == len(seeds), key, "a non-empty list of distinct integers", seeds)
    for s in seeds:
        _require(0 <= s < 2**31, key, "integers in [0, 2**31)", s)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 6, 6, 80, 80, 40


def _show(value: Any) -> str:
    """A short repr for messages (a YAML alias bomb must not print gigabytes)."""
    text = _REPR.repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise ConfigError(f"unknown key {prefix}{_REPR.repr(unknown[0]) if not isinstance(unknown[0], str) else unknown[0][:80]} "
                          f"(known: {', '.join(fields)})")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # comparisons on odd values inside __post_init__
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is Literal or origin is Annotated:
        choices = typing.get_args(tp) if origin is Literal else typing.get_args(tp)[1].names()
        if value not in choices or isinstance(value, bool):
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {_show(value)}")
        return value
    if origin in (list, typing.List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {_show(value)}")
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported")  # pragma: no cover
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        try:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:  # an integer beyond any float
            ok = False
        if not ok:
            raise ConfigError(f"{key} must be a finite number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_show(value)}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(f"{key} must be text without control characters (tabs, line breaks, NUL), "
                              f"got {_show(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover
