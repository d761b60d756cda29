"""Model construction: a torchvision ResNet with a new final layer for C classes.

``resnet10`` is torchvision's ``ResNet`` with one ``BasicBlock`` per stage, a CPU-friendly
member of the same family for the embedded default; the others are torchvision's own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, ResNet

from cxrprune.core.errors import CxrpruneError

ARCHS = ("resnet10", "resnet18", "resnet34", "resnet50")

# ImageNet normalisation; grayscale inputs are replicated to three channels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


def build_model(arch: str, num_classes: int, pretrained: str = "none") -> nn.Module:
    """A ResNet whose final layer is ``Linear(features, num_classes)``.

    ``pretrained`` is ``none``, ``imagenet`` (torchvision's weights, downloaded and cached
    by torchvision) or a path to a state-dict file for the backbone.
    """
    if arch not in ARCHS:
        raise CxrpruneError(f"train.arch: unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "resnet10":
        model: nn.Module = ResNet(BasicBlock, [1, 1, 1, 1])
    else:
        model = getattr(tvm, arch)(weights=None)
    _load_pretrained(model, arch, pretrained)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _load_pretrained(model: nn.Module, arch: str, pretrained: str) -> None:
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        if arch not in _IMAGENET_WEIGHTS:
            raise CxrpruneError(f"train.pretrained: no ImageNet weights exist for {arch}; use none or a file")
        weights = getattr(tvm, _IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # urllib raises many types when offline
            raise CxrpruneError(
                f"train.pretrained: cannot download ImageNet weights for {arch} ({type(exc).__name__}: {exc}). "
                f"Offline, download {weights.url} on a connected machine and set train.pretrained "
                f"to the local file's path") from None
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise CxrpruneError(f"train.pretrained: {pretrained!r} is neither none, imagenet nor an existing file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CxrpruneError(f"train.pretrained: {path} is not a readable state-dict file ({_load_failure(exc)}); "
                                f"save one with torch.save(model.state_dict(), path)") from None
        # A bare state dict, this project's model.pt ("state_dict") or a PruneCXR chkpt.pt ("weights").
        for key in ("state_dict", "weights"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CxrpruneError(f"train.pretrained: {path} holds a {type(state).__name__}, not a state dict "
                                f"(a mapping of parameter names to tensors, as saved by torch.save(model.state_dict()))")
        if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
            state = {k[len("module."):]: v for k, v in state.items()}
    # The final layer is replaced afterwards, so its shape may differ from the file's.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    # Old files (torchvision's ImageNet weights among them) lack BatchNorm's step counter;
    # load_state_dict fills it in.
    missing = [k for k in own if k not in state and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or wrong:
        raise CxrpruneError(
            f"train.pretrained: weights do not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:2]} ({len(missing)}/{len(unexpected)}/{len(wrong)} in all); "
            f"use weights saved from the same architecture")
    model.load_state_dict(state, strict=False)


def _load_failure(exc: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)`` (torch's own text is a page long)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"not plain tensors: {detail.split('. Please')[0].strip() or 'unsupported content'}"
    first = (text.strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else f"{type(exc).__name__}: empty or truncated file"


def prunable_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The ``(module, "weight")`` pairs the study prunes: every Conv2d and Linear weight."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]



