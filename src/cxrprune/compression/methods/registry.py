"""Every compression method by name (``prune.methods``): the class its catalog entry names
(:data:`cxrprune.core.catalog.METHODS`), imported when it is asked for."""

from __future__ import annotations

from cxrprune.compression.methods import unknown_method
from cxrprune.compression.methods.base import Method
from cxrprune.core import catalog


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass of ``name`` (its module is imported on first use)."""
    if name not in catalog.METHODS:
        raise unknown_method(name)
    cls = catalog.load(catalog.METHODS[name].implementation)
    if not (isinstance(cls, type) and issubclass(cls, Method) and cls.name == name):
        raise TypeError(f"catalog entry {name!r}: {catalog.METHODS[name].implementation} is not a Method "
                        f"subclass named {name!r}")
    return cls


def get(name: str) -> Method:
    """A fresh instance of the method called ``name`` (``prune.methods`` was validated)."""
    return method_class(name)()
