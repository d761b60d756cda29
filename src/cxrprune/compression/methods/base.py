"""The one interface every compression method implements.

A method turns a trained dense model into one compressed model per level it takes, in
increasing order, and says what it measured on the model it produced (the sparsity is read
from the weights, never taken from the nominal level). The prune stage predicts the test set
with each yielded model, writes one block of the prediction table per level and measures the
efficiency of the artifact (:mod:`cxrprune.compression.efficiency`), so evaluate, analyze and
the reader study work for every method without special cases.

A compressed model is either a torch module (``model``; the stage predicts it with
:func:`~cxrprune.compression.predict.predict_probs`) or, for one that runs in another engine
or another dtype, a ``predict(images_uint8) -> probs`` callable (int8 in ONNX Runtime,
fp16/bf16 weights). ``save(path)`` writes its deployable form, whose size is the ``bytes`` of
the efficiency table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cxrprune.compression.methods import method_levels
from cxrprune.core.config import PruneConfig, TrainConfig

# uint8 images (N, S, S) -> sigmoid probabilities (N, C) float32
PredictFn = Callable[[torch.Tensor], np.ndarray]


@dataclass
class Context:
    """What a method may need besides the model: the seed, the configuration and, loaded only
    when a method asks, a split of the prepared data (``split("val")`` -> ``(images uint8
    (N, S, S), labels float32 (N, C))``)."""

    seed: int
    prune: PruneConfig
    train: TrainConfig
    device: torch.device
    image_size: int  # of the prepared images (example inputs for tracing and export)
    split: Callable[[str], tuple[np.ndarray, np.ndarray]]


@dataclass
class Compressed:
    level: float  # the requested level (the prediction table's ``sparsity`` column)
    measured_sparsity: float  # read from the produced model (pruning: zero weights; channel: parameters removed)
    save: Callable[[Path], None]  # writes the deployable file (its size is the ``bytes`` of the efficiency table)
    model: nn.Module | None = None  # a torch module ready to predict; valid until the iterator advances
    predict: PredictFn | None = None  # for a model that is not a plain fp32 torch module
    engine: str = "torch"  # torch (on the stage's device) | onnxruntime (on the CPU)
    nonzero_params: int | None = None  # counted from the artifact when ``model`` is None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.predict is None):
            raise ValueError("a Compressed carries either a torch model or a predict function")
        if self.model is None and self.nonzero_params is None:
            raise ValueError("a Compressed without a torch model must count its non-zero parameters")


class Method(ABC):
    name: ClassVar[str]

    @classmethod
    def levels(cls, requested: Sequence[float]) -> list[float]:
        """The levels this method produces for the configured ``prune.levels`` (one rule for
        every method, :func:`cxrprune.compression.methods.method_levels`: methods without
        sparsity levels, ``single_level`` in their catalog entry, run once at 0.0)."""
        return method_levels(cls.name, requested)

    def check(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> None:
        """Refuse, before any work, what this method cannot do (a missing engine, a level it
        cannot reach, an architecture it cannot handle): raise ``ConfigError``."""

    @abstractmethod
    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        """Yield one :class:`Compressed` per level of :meth:`levels`, in increasing order.
        ``model`` may be modified in place while iterating; it holds its dense weights again
        once the iterator is exhausted or closed."""
