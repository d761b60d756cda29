"""Argument checks shared by the tests: each failure is one :class:`CxrpruneError` naming the argument.

Bad input is the caller's to fix (a wrong shape, a NaN, an unknown option), so it is reported
as the project's user-facing error rather than a traceback from deep inside numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from cxrprune.core.errors import CxrpruneError


def fail(name: str, message: str) -> NoReturn:
    """Raise the error for argument ``name``."""
    raise CxrpruneError(f"{name}: {message}")


def shown(value: Any) -> str:
    """``repr`` of a value for an error message, numpy scalars as the Python number they hold."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def float_array(value: Any, name: str, ndim: int) -> np.ndarray:
    """``value`` as a float64 array of ``ndim`` dimensions (a copy is not guaranteed)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        fail(name, f"must be numeric, got {type(value).__name__} ({exc})")
    if arr.ndim != ndim:
        fail(name, f"must be {ndim}-D, got shape {arr.shape}")
    return arr


def finite(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` unchanged if every entry is finite."""
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        fail(name, f"{int(bad.sum())} non-finite value(s), first at index {first[0] if len(first) == 1 else first}")
    return arr


def choice(value: Any, name: str, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``."""
    if value not in options:
        fail(name, f"must be one of {list(options)}, got {shown(value)}")
    return str(value)


def probability(value: Any, name: str) -> float:
    """A number strictly between 0 and 1 (a significance level or a power)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        fail(name, f"must be a number in (0, 1), got {shown(value)}")
    if not 0.0 < v < 1.0:
        fail(name, f"must be in (0, 1), got {shown(value)}")
    return v


def nonnegative(value: Any, name: str, meaning: str = "") -> float:
    """``value`` as a finite float >= 0, else one error naming ``name`` (``meaning`` says what it is)."""
    what = f" ({meaning})" if meaning else ""
    try:
        x = float(value)
    except (TypeError, ValueError):
        fail(name, f"must be a number >= 0{what}, got {shown(value)}")
    if not math.isfinite(x) or x < 0:
        fail(name, f"must be a finite number >= 0{what}, got {shown(value)}")
    return x


def count(value: Any, name: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bools refused: ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        fail(name, f"must be an integer >= {minimum}, got {shown(value)}")
    return int(value)


def seed(value: Any) -> int:
    """A non-negative integer seed for :func:`numpy.random.default_rng`."""
    return count(value, "seed", minimum=0)


def column(table: Any, col: Any, name: str) -> np.ndarray:
    """Column ``col`` of a table (a DataFrame or a mapping of arrays) as a numpy array."""
    try:
        values = table[col]
    except (KeyError, IndexError, TypeError):
        fail(name, f"no column {shown(col)}")
    return np.asarray(values)
