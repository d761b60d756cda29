"""Import a model the user already has as ``train@<seed>``'s model (``model.source: checkpoint``).

What a deployer brings is one trained network, not thirty seeds: a torchvision-style
``state_dict`` (bare, under ``state_dict``/``model``/``weights``, or saved from
``nn.DataParallel``), this project's ``model.pt``, or a whole module saved with
``torch.save(model, path)``. It is read without running code (``weights_only``; a whole
module may reference torch's and torchvision's module classes only, which are allowed one by
one), loaded strictly into ``train.arch`` (every weight, the head included, of the right
shape), and its outputs are mapped onto the dataset's classes *by name*: the head's rows are
reordered, never assumed. The file's md5 goes into ``model.pt`` and the MLflow run, so a
result names the exact checkpoint it audited.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cxrprune.core.checksums import file_digest
from cxrprune.core.errors import CxrpruneError
from cxrprune.training.models import architecture, build_model, canonical_state, head, load_checked, load_failure

# Modules whose classes a whole saved module may reference: torch's layers and torchvision's
# models and the blocks they are built of. Anything else would run code of unknown origin.
_ALLOWED_MODULES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.")
# Plain values such modules hold as attributes (EfficientNet keeps its norm layer as a partial).
_ALLOWED_NAMES = {"functools.partial", "builtins.set", "collections.OrderedDict", "torch.nn.parameter.Parameter"}
_UNWRAP = ("state_dict", "model", "weights")  # where checkpoints of common trainers keep the weights


@dataclass(frozen=True)
class Imported:
    model: nn.Module  # head in the dataset's class order
    md5: str
    file_classes: list[str]  # the checkpoint's output order


def import_checkpoint(path: str | Path, arch: str, classes: list[str], named: list[str],
                      image_size: int) -> Imported:
    """The checkpoint at ``path`` as a ``arch`` model whose outputs are ``classes`` (the
    dataset's order). ``named`` lists the file's outputs in order ([]: the names the file
    stores). Every problem is one :class:`CxrpruneError` naming ``model.*`` and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CxrpruneError(f"model.path: {path} does not exist; point it at the checkpoint file to audit")
    state, stored = read_state(path)
    state = canonical_state(arch, state)
    key = architecture(arch).head + ".weight"
    if key not in state or state[key].ndim != 2:
        raise CxrpruneError(f"model.path: {path} has no {key!r}: it is not a {arch} classifier "
                            f"(train.arch); set train.arch to the checkpoint's architecture")
    n_out = int(state[key].shape[0])
    names = list(named) or list(stored or [])
    if not names:
        raise CxrpruneError(f"model.classes: {path} stores no class names; list its {n_out} outputs in order, "
                            f"by the dataset's names ({', '.join(classes)})")
    if len(names) != n_out:
        raise CxrpruneError(f"model.classes: lists {len(names)} names, the checkpoint's head has {n_out} outputs")
    order = class_order(names, classes)
    model = build_model(arch, n_out, image_size=image_size)
    load_checked(model, state, f"model.path: {path} does not fit train.arch {arch}",
                 "set train.arch to the checkpoint's architecture and data.image_size to its input size")
    _reorder_head(head(model, arch), order)
    return Imported(model.eval(), file_digest(path, "md5"), names)


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The weights and the class names the file stores (None when it stores none)."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:
        raise CxrpruneError(f"model.path: {path} is not a checkpoint torch can read ({load_failure(exc)}); "
                            f"save one with torch.save(model.state_dict(), path)") from None
    refused = [n for n in unsafe if not (n.startswith(_ALLOWED_MODULES) or n in _ALLOWED_NAMES)]
    if refused:
        raise CxrpruneError(f"model.path: {path} would run code of {', '.join(refused[:3])} to load; only torch's "
                            f"and torchvision's module classes are loaded. Save the weights instead: "
                            f"torch.save(model.state_dict(), path)")
    try:
        with torch.serialization.safe_globals([_resolve(n) for n in unsafe]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CxrpruneError(f"model.path: {path} is not a readable checkpoint ({load_failure(exc)}); "
                            f"save one with torch.save(model.state_dict(), path)") from None
    stored = None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, dict):
        if isinstance(obj.get("classes"), (list, tuple)):
            stored = [str(c) for c in obj["classes"]]
        for key in _UNWRAP:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CxrpruneError(f"model.path: {path} holds a {type(obj).__name__} without weights; save one with "
                            f"torch.save(model.state_dict(), path)")
    return dict(obj), stored


def class_order(names: list[str], classes: list[str]) -> list[int]:
    """For each dataset class, the row of the checkpoint's head that predicts it; the two
    name sets must be equal (a class scored by nothing, or an output with no labels, would
    silently drop out of every statistic)."""
    lacks = [c for c in classes if c not in names]
    extra = [c for c in names if c not in classes]
    if lacks or extra:
        raise CxrpruneError(f"model.classes: the checkpoint's outputs and the dataset's classes differ: the model "
                            f"lacks {lacks or 'none'}; the data lacks {extra or 'none'}. Rename the outputs in "
                            f"model.classes to the dataset's names, or use a dataset with the model's classes")
    return [names.index(c) for c in classes]


@torch.no_grad()
def _reorder_head(layer: nn.Linear, order: list[int]) -> None:
    index = torch.as_tensor(order)
    layer.weight.copy_(layer.weight[index].clone())
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[index].clone())


def _resolve(name: str) -> object:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)
