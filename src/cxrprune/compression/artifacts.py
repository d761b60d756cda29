"""The deployable files of compressed models, written so that their size can be measured.

- dense fp32 (and fp16/bf16-cast) models: ``torch.save`` of the state dict;
- unstructured sparsity (``l1``, ``random``, ``l1_layer``, ``l1_finetune``): a bitmask-sparse
  state dict: every Conv2d/Linear weight as a packed keep-bitmask (1 bit per weight) plus its
  non-zero values (float32), every other tensor dense; :func:`load_sparse` restores the
  dense state dict exactly. 4 bytes per kept weight + n/8 bytes, against 4n dense;
- ``channel``: ``torch.save`` of the whole smaller module (its architecture differs from the
  training one, so a state dict alone cannot be loaded into ``build_model``);
- ``int8``: the quantised ONNX file itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrprune.training.models import prunable_parameters

SPARSE_FORMAT = "cxrprune-bitmask-v1"


def save_state_dict(model: nn.Module, path: Path) -> None:
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)


def save_module(model: nn.Module, path: Path) -> None:
    torch.save(model, path)


def save_sparse(model: nn.Module, path: Path) -> None:
    """The bitmask-sparse state dict of ``model`` (see the module docstring)."""
    names = {id(getattr(m, name)) for m, name in prunable_parameters(model)}
    params = dict(model.named_parameters())
    out: dict = {"format": SPARSE_FORMAT, "dense": {}, "sparse": {}}
    for key, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        if key in params and id(params[key]) in names:
            flat = t.reshape(-1).numpy()
            keep = flat != 0
            out["sparse"][key] = {"shape": tuple(t.shape), "mask": torch.from_numpy(np.packbits(keep)),
                                  "values": torch.from_numpy(flat[keep].copy())}
        else:
            out["dense"][key] = t
    torch.save(out, path)


def load_sparse(path: Path) -> dict[str, torch.Tensor]:
    """The dense state dict stored by :func:`save_sparse`."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != SPARSE_FORMAT:
        raise ValueError(f"{path}: not a {SPARSE_FORMAT} file")
    state = dict(data["dense"])
    for key, entry in data["sparse"].items():
        n = int(np.prod(entry["shape"]))
        keep = np.unpackbits(entry["mask"].numpy(), count=n).astype(bool)
        flat = np.zeros(n, dtype=np.float32)
        flat[keep] = entry["values"].numpy()
        state[key] = torch.from_numpy(flat).reshape(entry["shape"])
    return state


def count_nonzero_params(model: nn.Module) -> int:
    """Non-zero entries of every parameter of ``model`` (weights, biases, BatchNorm affine)."""
    return int(sum(int(torch.count_nonzero(p.detach())) for p in model.parameters()))


def onnx_nonzero_params(path: Path) -> int:
    """Non-zero entries of an ONNX file's parameters: its initializers, without the
    quantisation scales and zero points (bookkeeping of the int8 format, not weights)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return int(sum(np.count_nonzero(numpy_helper.to_array(t)) for t in graph.initializer
                   if not (t.name.endswith("_scale") or t.name.endswith("_zero_point"))))
