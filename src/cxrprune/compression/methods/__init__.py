"""Compression methods, one module each behind :class:`~cxrprune.compression.methods.base.Method`.

To add one: a module here with a ``Method`` subclass, an entry in :data:`REGISTRY`, and
its name in the ``prune.methods`` choices of :mod:`cxrprune.core.config`.
"""

from __future__ import annotations

from cxrprune.compression.methods.base import Compressed, Method
from cxrprune.compression.methods.l1 import GlobalL1
from cxrprune.compression.methods.random import RANDOM_PRUNE_SEED_OFFSET, RandomPruning

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (GlobalL1, RandomPruning)}


def get(name: str) -> Method:
    """The method called ``name`` (``prune.methods`` was validated against the registry)."""
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown compression method {name!r}; choose one of {sorted(REGISTRY)}") from None


__all__ = ["Compressed", "Method", "REGISTRY", "RANDOM_PRUNE_SEED_OFFSET", "get"]
