"""Model construction: a torchvision classifier with a new final layer for C classes.

``resnet10`` is torchvision's ``ResNet`` with one ``BasicBlock`` per stage, a CPU-friendly
member of the same family for the embedded default; ``vit_tiny`` is torchvision's
``VisionTransformer`` at DeiT-Tiny's width and depth (192 wide, 3 heads, 12 layers) with
8 px patches, sized for the small images of the CPU default. The others are torchvision's
own. Each is an entry of :data:`cxrprune.core.catalog.ARCHITECTURES` (its final layer, the
input sizes it accepts, its ImageNet weights) naming its builder here.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vision_transformer import VisionTransformer

from cxrprune.core import catalog
from cxrprune.core.errors import CxrpruneError

# ImageNet normalisation; grayscale inputs are replicated to three channels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's DenseNet files name layers "norm.1" where the modules are now "norm1".
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def build_model(arch: str, num_classes: int, pretrained: str = "none", image_size: int | None = None) -> nn.Module:
    """A classifier whose final layer (the catalog entry's ``head``) is ``Linear(features, num_classes)``.

    ``pretrained`` is ``none``, ``imagenet`` (torchvision's weights, downloaded and cached
    by torchvision) or a path to a state-dict file for the backbone. ``image_size`` matters
    to the vision transformers only (their position embeddings are built for one size).
    """
    spec = architecture(arch)
    builder = catalog.load(spec.implementation)
    model: nn.Module = builder(arch, image_size or spec.default_image_size)
    _load_pretrained(model, arch, pretrained)
    parent, name = _head_parent(model, arch)
    setattr(parent, name, nn.Linear(getattr(parent, name).in_features, num_classes))
    return model


def architecture(arch: str) -> catalog.ArchSpec:
    """The catalog entry of ``arch``, or the error that lists the known ones."""
    if arch not in catalog.ARCHITECTURES:
        raise CxrpruneError(f"train.arch: unknown architecture {arch!r}; choose one of "
                            f"{', '.join(catalog.architecture_names())}")
    return catalog.ARCHITECTURES[arch]


# Builders named by the catalog: (arch, image_size) -> the untrained torchvision module.


def torchvision_model(arch: str, image_size: int) -> nn.Module:
    """torchvision's own ``arch`` (a CNN: any input size)."""
    return getattr(tvm, arch)(weights=None)


def resnet10(arch: str, image_size: int) -> nn.Module:
    return ResNet(BasicBlock, [1, 1, 1, 1])


def vit_tiny(arch: str, image_size: int) -> nn.Module:
    return VisionTransformer(image_size=image_size, patch_size=8, num_layers=12, num_heads=3, hidden_dim=192,
                             mlp_dim=768)


def vit_b_16(arch: str, image_size: int) -> nn.Module:
    return tvm.vit_b_16(weights=None, image_size=image_size)


def head(model: nn.Module, arch: str) -> nn.Linear:
    """The final layer of a model built by :func:`build_model`."""
    parent, name = _head_parent(model, arch)
    return getattr(parent, name)


def _head_parent(model: nn.Module, arch: str) -> tuple[nn.Module, str]:
    *path, name = architecture(arch).head.split(".")
    parent = model
    for part in path:
        parent = parent[int(part)] if part.isdigit() else getattr(parent, part)
    return parent, name


def _load_pretrained(model: nn.Module, arch: str, pretrained: str) -> None:
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        weights_name = architecture(arch).imagenet_weights
        if not weights_name:
            raise CxrpruneError(f"train.pretrained: no ImageNet weights exist for {arch}; use none or a file")
        weights = getattr(tvm, weights_name).IMAGENET1K_V1
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
            raise CxrpruneError(f"train.pretrained: {path} is not a readable state-dict file ({load_failure(exc)}); "
                                f"save one with torch.save(model.state_dict(), path)") from None
        # A bare state dict, this project's model.pt ("state_dict") or a PruneCXR chkpt.pt ("weights").
        for key in ("state_dict", "weights"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CxrpruneError(f"train.pretrained: {path} holds a {type(state).__name__}, not a state dict "
                                f"(a mapping of parameter names to tensors, as saved by torch.save(model.state_dict()))")
    state = canonical_state(arch, state)
    # The final layer is replaced afterwards, so its shape may differ from the file's.
    prefix = architecture(arch).head + "."
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    load_checked(model, state, f"train.pretrained: weights do not fit {arch}",
                 "use weights saved from the same architecture", skip=prefix)


def load_checked(model: nn.Module, state: dict, what: str, fix: str, skip: str | None = None) -> None:
    """``model.load_state_dict(state)`` after checking every key and shape (names under
    ``skip`` aside), so that a mismatch is one error naming the first few of each kind
    (``what``: the problem, ``fix``: what to do) instead of torch's page-long one. Old files
    (torchvision's ImageNet weights among them) lack BatchNorm's step counter; load_state_dict
    fills it in."""
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state and not (skip and k.startswith(skip))
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or wrong:
        raise CxrpruneError(f"{what}: missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:2]} "
                            f"({len(missing)}/{len(unexpected)}/{len(wrong)} in all); {fix}")
    model.load_state_dict(state, strict=False)


def canonical_state(arch: str, state: dict) -> dict:
    """A state dict under the names this project's ``arch`` uses: without nn.DataParallel's
    ``module.`` prefix, DenseNet's old ``norm.1`` keys renamed."""
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if arch == "densenet121":
        state = {_densenet_key(k): v for k, v in state.items()}
    return state


def _densenet_key(key: str) -> str:
    m = _DENSENET_OLD_KEY.match(key)
    return m.group(1) + m.group(2) if m else key


def load_failure(exc: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)`` (torch's own text is a page long)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"not plain tensors: {detail.split('. Please')[0].strip() or 'unsupported content'}"
    first = (text.strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else f"{type(exc).__name__}: empty or truncated file"


# Projection weights of nn.MultiheadAttention that are parameters of the attention module
# itself, not of an nn.Linear (its out_proj is an nn.Linear and is found as one).
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def prunable_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The ``(module, name)`` pairs the study prunes, in module order: every Conv2d and
    Linear weight and, in a transformer, the attention's input projections (``q``, ``k``,
    ``v``: ``nn.MultiheadAttention.in_proj_weight``, not an ``nn.Linear``). Biases, norms,
    embeddings and the class token are not pruned, as in the paper's ResNet."""
    out: list[tuple[nn.Module, str]] = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out.append((m, "weight"))
        elif isinstance(m, nn.MultiheadAttention):
            out.extend((m, name) for name in _ATTENTION_WEIGHTS if getattr(m, name, None) is not None)
    return out



