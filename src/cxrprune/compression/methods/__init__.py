"""Compression methods, one module each behind :class:`~cxrprune.compression.methods.base.Method`
(``registry.get(name)`` gives one).

This package's top level stays free of torch and of the methods' code: the prediction-table
contract (:mod:`cxrprune.compression.predictions`), evaluate and analyze need to know only
which levels each method produces (:func:`method_levels`), and importing the methods would
make every edit of a method a dependency of those stages.

To add a method: a module here with a ``Method`` subclass, an entry in
:data:`~cxrprune.compression.methods.registry.REGISTRY`, its name in :data:`NAMES` (and in
:data:`SINGLE_LEVEL` if it has no sparsity levels), and in the ``prune.methods`` choices of
:mod:`cxrprune.core.config`.
"""

from __future__ import annotations

from typing import Sequence

NAMES = ("l1", "random", "l1_layer", "channel", "int8", "fp16", "bf16", "l1_finetune")
# Methods without sparsity levels: one model each, its block at level 0.0.
SINGLE_LEVEL = frozenset({"int8", "fp16", "bf16"})


def method_levels(method: str, requested: Sequence[float]) -> list[float]:
    """The levels ``method`` produces (its blocks in the prediction table) for the configured
    ``prune.levels``: the requested levels, sorted, or ``[0.0]`` for a method without
    sparsity levels (int8, fp16, bf16)."""
    if method not in NAMES:
        raise ValueError(f"unknown compression method {method!r}; choose one of {', '.join(NAMES)}")
    return [0.0] if method in SINGLE_LEVEL else sorted(float(k) for k in requested)
