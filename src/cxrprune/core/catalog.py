"""The catalog: every compression method, architecture and data source by name, in one place.

Following open_lth's one-registry-per-extension-point, each entry says what the rest of the
pipeline needs to know about an extension (its name, its options, the image sizes it takes)
and names its implementation as ``"module:attribute"``. The catalog imports no torch and no
implementation, so ``core.config`` validates ``params.yaml`` against it cheaply and the
torch-free stages (evaluate, analyze, report) never depend on a method's or a model's code.
The one place that imports an implementation is :func:`load`, called by
``compression.methods.registry`` (methods), ``training.models`` (architectures) and
``datasets.sources`` (sources); ``tests/stage_deps.py`` follows the names here so that a
stage's DVC deps still list the implementation modules it runs.

Adding one: write the module, then either add an entry below or call
:func:`register_method` / :func:`register_architecture` / :func:`register_source` before
``params.yaml`` is loaded (tests and plug-ins; see the README's "Adding a new method /
architecture / source").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Reference(NamedTuple):
    method: str
    level: float


# The dense model every method, level and analysis is compared with: l1 at level 0 of the same
# seed (level 0 prunes nothing, so its predictions are the trained model's).
DENSE_REFERENCE = Reference("l1", 0.0)


@dataclass(frozen=True)
class MethodSpec:
    """A compression method (``prune.methods``): a ``compression.methods.base.Method`` subclass."""

    name: str
    implementation: str  # "module:Class"
    # No sparsity levels: one model, its block of the prediction table at level 0.0.
    single_level: bool = False
    # The prune.* keys only this method reads (params.yaml keeps them flat under prune).
    options: tuple[str, ...] = ()
    # Its deployable file (``compression.export.LOADERS``): sparse, state_dict, module or onnx.
    artifact_format: str = "sparse"


@dataclass(frozen=True)
class ArchSpec:
    """An architecture (``train.arch``). ``implementation`` builds it untrained:
    ``builder(arch, image_size) -> nn.Module`` with its own final layer, which
    ``training.models.build_model`` replaces by one with C outputs."""

    name: str
    implementation: str  # "module:function"
    head: str  # dotted path of the final nn.Linear ("fc", "classifier.1", "heads.head")
    min_image_size: int = 32  # the CNNs downsample 32x: a >= 1 px final map
    size_multiple: int = 1  # a ViT cuts the image into whole patches
    imagenet_weights: str = ""  # torchvision's weights enum ("ResNet18_Weights"); "" = none exist
    imagenet_image_size: int = 0  # the only data.image_size those weights fit (0: any)
    default_image_size: int = 0  # size built when the caller gives none (a ViT's position embeddings fix it)


@dataclass(frozen=True)
class SourceSpec:
    """A dataset layout (``data.source``): ``reader(root: Path, options: SourceOptions) -> SourceData``."""

    name: str
    implementation: str  # "module:function"
    # The data.options keys it reads; any other key must stay empty, so a typo'd setup is refused.
    options: frozenset[str] = field(default_factory=frozenset)
    # The authors published predictions for it (`cxrprune import-predictions --dataset`).
    published_predictions: bool = False


_METHODS = "cxrprune.compression.methods."
_MODELS = "cxrprune.training.models:"
_SOURCES = "cxrprune.datasets.sources:"

METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("l1", _METHODS + "l1:GlobalL1"),
    MethodSpec("random", _METHODS + "random:RandomPruning", options=("random_masks",)),
    MethodSpec("l1_layer", _METHODS + "l1_layer:LayerwiseL1"),
    MethodSpec("channel", _METHODS + "channel:ChannelPruning", artifact_format="module"),
    MethodSpec("int8", _METHODS + "int8:Int8Static", single_level=True, options=("calibration_images",),
               artifact_format="onnx"),
    MethodSpec("fp16", _METHODS + "cast:Fp16Cast", single_level=True, artifact_format="state_dict"),
    MethodSpec("bf16", _METHODS + "cast:Bf16Cast", single_level=True, artifact_format="state_dict"),
    MethodSpec("l1_finetune", _METHODS + "l1_finetune:FinetunedL1", options=("finetune_epochs",)),
)}

ARCHITECTURES: dict[str, ArchSpec] = {s.name: s for s in (
    ArchSpec("resnet10", _MODELS + "resnet10", "fc"),
    ArchSpec("resnet18", _MODELS + "torchvision_model", "fc", imagenet_weights="ResNet18_Weights"),
    ArchSpec("resnet34", _MODELS + "torchvision_model", "fc", imagenet_weights="ResNet34_Weights"),
    ArchSpec("resnet50", _MODELS + "torchvision_model", "fc", imagenet_weights="ResNet50_Weights"),
    ArchSpec("densenet121", _MODELS + "torchvision_model", "classifier", imagenet_weights="DenseNet121_Weights"),
    ArchSpec("efficientnet_b0", _MODELS + "torchvision_model", "classifier.1",
             imagenet_weights="EfficientNet_B0_Weights"),
    ArchSpec("convnext_tiny", _MODELS + "torchvision_model", "classifier.2",
             imagenet_weights="ConvNeXt_Tiny_Weights"),
    ArchSpec("vit_tiny", _MODELS + "vit_tiny", "heads.head", size_multiple=8, default_image_size=48),
    # torchvision's ImageNet ViT-B/16 position embeddings: 14 x 14 patches of 16 px
    ArchSpec("vit_b_16", _MODELS + "vit_b_16", "heads.head", size_multiple=16, imagenet_weights="ViT_B_16_Weights",
             imagenet_image_size=224, default_image_size=224),
)}

SOURCES: dict[str, SourceSpec] = {s.name: s for s in (
    SourceSpec("nih-cxr-lt", _SOURCES + "read_nih_cxr_lt", frozenset({"labels", "classes"}),
               published_predictions=True),
    SourceSpec("mimic-cxr-lt", _SOURCES + "read_mimic_cxr_lt",
               frozenset({"labels", "image_column", "patient_column", "classes"}), published_predictions=True),
    SourceSpec("csv", _SOURCES + "read_csv_dataset",
               frozenset({"labels", "image_column", "patient_column", "split_column", "classes"})),
    SourceSpec("medmnist", _SOURCES + "read_medmnist", frozenset({"npz", "classes"})),
)}


def register_method(spec: MethodSpec) -> None:
    """Add a method (a plug-in or a test); the name must be new."""
    _register(METHODS, spec, "compression method")


def register_architecture(spec: ArchSpec) -> None:
    """Add an architecture (a plug-in or a test); the name must be new."""
    _register(ARCHITECTURES, spec, "architecture")


def register_source(spec: SourceSpec) -> None:
    """Add a data source (a plug-in or a test); the name must be new."""
    _register(SOURCES, spec, "data source")


def unregister(name: str) -> None:
    """Remove an entry added by a ``register_*`` call (tests clean up with it)."""
    for table in (METHODS, ARCHITECTURES, SOURCES):
        table.pop(name, None)


def _register(table: dict, spec: Any, kind: str) -> None:
    if spec.name in table:
        raise ValueError(f"{kind} {spec.name!r} is already in the catalog")
    module, sep, attribute = spec.implementation.partition(":")
    if not (module and sep and attribute):
        raise ValueError(f"{kind} {spec.name!r}: implementation must be 'module:attribute', "
                         f"got {spec.implementation!r}")
    table[spec.name] = spec


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def architecture_names() -> tuple[str, ...]:
    return tuple(ARCHITECTURES)


def source_names() -> tuple[str, ...]:
    return tuple(SOURCES)


def load(implementation: str) -> Any:
    """The object ``"module:attribute"`` names (imports its module: torch, for methods and models)."""
    module, _, attribute = implementation.partition(":")
    return getattr(importlib.import_module(module), attribute)
