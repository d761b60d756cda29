"""Family-wise error control over several p-values: Holm (1979) and Bonferroni.

Holm's step-down procedure rejects everything Bonferroni rejects and more, under any
dependence between the tests. A NaN p-value (a test that could not be done) is left out of
the family rather than counted: the adjustment is over the ``m`` tests that exist, the NaN
stays NaN in place, and the result lists which entries were left out so that a report can
say so instead of hiding them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrprune.stats import checks
from cxrprune.stats.results import plain


@dataclass(frozen=True)
class AdjustedP:
    """Adjusted p-values in the input order (NaN where left out) over a family of ``m``."""

    method: str
    adjusted: tuple[float, ...]
    left_out: tuple[int, ...]  # input positions with a NaN p-value
    m: int

    def as_array(self) -> np.ndarray:
        return np.asarray(self.adjusted, dtype=np.float64)

    def rejected(self, alpha: float = 0.05) -> tuple[bool, ...]:
        """``adjusted <= alpha`` (False where left out)."""
        alpha = checks.probability(alpha, "alpha")
        return tuple(bool(v) for v in np.nan_to_num(self.as_array(), nan=np.inf) <= alpha)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def holm(pvalues: Any) -> AdjustedP:
    """Holm step-down: sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``."""
    p, ok = _pvalues(pvalues)
    m = int(ok.sum())
    out = np.full(p.shape, np.nan)
    valid = p[ok]
    order = np.argsort(valid, kind="stable")
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * valid[order]))
    out[ok] = adjusted
    return AdjustedP("holm", tuple(out.tolist()), tuple(np.flatnonzero(~ok).tolist()), m)


def bonferroni(pvalues: Any) -> AdjustedP:
    """Bonferroni: ``min(1, m p)``."""
    p, ok = _pvalues(pvalues)
    m = int(ok.sum())
    out = np.where(ok, np.minimum(1.0, m * p), np.nan)
    return AdjustedP("bonferroni", tuple(out.tolist()), tuple(np.flatnonzero(~ok).tolist()), m)


def _pvalues(pvalues: Any) -> tuple[np.ndarray, np.ndarray]:
    p = checks.float_array(pvalues, "pvalues", 1)
    ok = ~np.isnan(p)
    bad = ok & ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        checks.fail("pvalues", f"must be in [0, 1] (or NaN for a test not done); entry {i} is {checks.shown(p[i])}")
    return p, ok
