"""Compression methods, one module each behind :class:`~cxrprune.compression.methods.base.Method`.

To add one: a module here with a ``Method`` subclass, an entry in :data:`REGISTRY`, and
its name in the ``prune.methods`` choices of :mod:`cxrprune.core.config`.
"""

from __future__ import annotations

from typing import Sequence

from cxrprune.compression.methods.base import Compressed, Method
from cxrprune.compression.methods.l1 import GlobalL1
from cxrprune.compression.methods.random import RANDOM_PRUNE_SEED_OFFSET, RandomPruning

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (GlobalL1, RandomPruning)}

# Methods that change the weights' number format, not their count: one level, 0.0 (no sparsity).
SINGLE_LEVEL_METHODS = frozenset({"int8", "fp16", "bf16"})


def method_levels(method: str, requested: Sequence[float]) -> list[float]:
    """The levels ``method`` produces when ``prune.levels`` asks for ``requested``: one block
    of the prediction table per level. Weight-format methods (int8, fp16, bf16) have one
    level, 0.0; every pruning method takes the requested levels."""
    return [0.0] if method in SINGLE_LEVEL_METHODS else [float(k) for k in requested]


def get(name: str) -> Method:
    """The method called ``name`` (``prune.methods`` was validated against the registry)."""
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown compression method {name!r}; choose one of {sorted(REGISTRY)}") from None


__all__ = ["Compressed", "Method", "REGISTRY", "RANDOM_PRUNE_SEED_OFFSET", "SINGLE_LEVEL_METHODS", "get",
           "method_levels"]
