"""Compression methods, one module each behind :class:`~cxrprune.compression.methods.base.Method`
(``registry.get(name)`` gives one).

This package's top level stays free of torch and of the methods' code: the prediction-table
contract (:mod:`cxrprune.compression.predictions`), evaluate and analyze need to know only
which levels each method produces (:func:`method_levels`), and importing the methods would
make every edit of a method a dependency of those stages.

To add a method: a module here (or anywhere) with a ``Method`` subclass and its entry in
:data:`cxrprune.core.catalog.METHODS` (see the README's "Adding a new method / architecture /
source").
"""

from __future__ import annotations

from typing import Sequence

from cxrprune.core import catalog


def unknown_method(method: str) -> ValueError:
    return ValueError(f"unknown compression method {method!r}; choose one of {', '.join(catalog.method_names())}")


def is_single_level(method: str) -> bool:
    """Whether ``method`` has no sparsity levels (one model, its block at level 0.0)."""
    if method not in catalog.METHODS:
        raise unknown_method(method)
    return catalog.METHODS[method].single_level


def method_levels(method: str, requested: Sequence[float]) -> list[float]:
    """The levels ``method`` produces (its blocks in the prediction table) for the configured
    ``prune.levels``: the requested levels, sorted, or ``[0.0]`` for a method without
    sparsity levels (int8, fp16, bf16)."""
    return [0.0] if is_single_level(method) else sorted(float(k) for k in requested)
