"""Every compression method by name (``prune.methods``)."""

from __future__ import annotations

from cxrprune.compression.methods import NAMES
from cxrprune.compression.methods.base import Method
from cxrprune.compression.methods.cast import Bf16Cast, Fp16Cast
from cxrprune.compression.methods.channel import ChannelPruning
from cxrprune.compression.methods.int8 import Int8Static
from cxrprune.compression.methods.l1 import GlobalL1
from cxrprune.compression.methods.l1_finetune import FinetunedL1
from cxrprune.compression.methods.l1_layer import LayerwiseL1
from cxrprune.compression.methods.random import RandomPruning

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (
    GlobalL1, RandomPruning, LayerwiseL1, ChannelPruning, Int8Static, Fp16Cast, Bf16Cast, FinetunedL1)}
assert tuple(REGISTRY) == NAMES, "methods.NAMES and the registry list the same methods"


def get(name: str) -> Method:
    """A fresh instance of the method called ``name`` (``prune.methods`` was validated)."""
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown compression method {name!r}; choose one of {', '.join(NAMES)}") from None
