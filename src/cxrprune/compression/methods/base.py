"""The one interface every compression method implements.

A method turns a trained dense model into one compressed model per level it is asked for,
in increasing order, and says what it measured on the model it produced (the sparsity is
read from the weights, never taken from the nominal level). The prune stage predicts the
test set with each yielded model and writes one block of the prediction table per level,
so evaluate, analyze and the reader study work for every method without special cases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator, Sequence

from torch import nn


@dataclass
class Compressed:
    level: float  # the requested level (the prediction table's ``sparsity`` column)
    model: nn.Module  # ready to predict; valid until the iterator advances
    measured_sparsity: float  # fraction of exactly-zero prunable weights, read from ``model``


class Method(ABC):
    name: ClassVar[str]

    @abstractmethod
    def compress(self, model: nn.Module, levels: Sequence[float], seed: int) -> Iterator[Compressed]:
        """Yield one :class:`Compressed` per level, in increasing order. ``model`` may be
        modified in place while iterating; it holds its dense weights again once the
        iterator is exhausted or closed."""
