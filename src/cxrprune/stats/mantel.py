"""Mantel (1967) and partial Mantel (Smouse, Long & Sokal 1986) tests between matrices over classes.

Two n x n symmetric matrices over the same items (classes), e.g. how often two classes are
confused and how much pruning changes their joint AP, give n (n - 1) / 2 pair values each.
Those pairs are not independent observations: every item appears in n - 1 of them, so an
item with a large effect moves a whole row of pairs at once, and the ordinary p-value of a
correlation over pairs is far too small. The Mantel test keeps that dependence in the null:
it permutes the item labels of ``x`` (rows and columns together) and recomputes the
correlation, so each null matrix has exactly the row structure of the observed one.

With n! no larger than ``permutations`` every permutation is enumerated and the p-value is
exact; otherwise ``permutations`` random ones give the Monte Carlo p-value
``(1 + count) / (1 + permutations)`` (:mod:`cxrprune.stats.permutation`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from cxrprune.stats import checks
from cxrprune.stats.permutation import ALTERNATIVES, count_extreme, exact_p, monte_carlo_p
from cxrprune.stats.results import plain

METHODS = ("spearman", "pearson")
_BATCH_VALUES = 1 << 20  # gathered permuted-triangle values per batch (8 MiB of float64)


@dataclass(frozen=True)
class MantelResult:
    """A Mantel test: ``permutations`` is the number evaluated (n! when ``exact``)."""

    r: float
    p: float
    n_items: int
    permutations: int
    exact: bool
    method: str
    alternative: str

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


@dataclass(frozen=True)
class PartialMantelResult:
    """A partial Mantel test: ``r`` is the partial correlation of x and y given z; the three
    simple correlations over the upper triangle come with it."""

    r: float
    p: float
    r_xy: float
    r_xz: float
    r_yz: float
    n_items: int
    permutations: int
    exact: bool
    method: str
    alternative: str

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def mantel(x: Any, y: Any, *, method: str = "spearman", permutations: int = 9999, seed: int = 0,
           alternative: str = "two-sided") -> MantelResult:
    """Correlation of the upper triangles of ``x`` and ``y``, tested by permuting x's items.

    ``method`` ``spearman`` ranks each triangle (average ranks for ties) first. The diagonal
    is ignored (it may be NaN). ``two-sided`` counts permutations with ``|r| >= |r_obs|``:
    the scores are centred, so every off-diagonal value of a permuted x averages to 0 and
    the permutation distribution of r is centred at 0.
    """
    method, alternative, permutations, seed = _options(method, alternative, permutations, seed)
    tx, ty = _triangle(x, "x"), _triangle(y, "y")
    n = _same_size(tx, ty, ("x", "y"))
    sx, sy = _scores(tx, method, "x"), _scores(ty, method, "y")
    sq = _square(sx, n)
    r_obs = float(np.clip(sx @ sy, -1.0, 1.0))
    count, total, exact = 0, 0, False
    for perms, exact in _permutations(n, permutations, seed):
        r = _gather(sq, perms) @ sy
        count += count_extreme(r_obs, r, alternative)
        total += len(perms)
    p = exact_p(count, total) if exact else monte_carlo_p(count, total)
    return MantelResult(r_obs, p, n, total, exact, method, alternative)


def partial_mantel(x: Any, y: Any, z: Any, *, method: str = "spearman", permutations: int = 9999,
                   seed: int = 0, alternative: str = "two-sided") -> PartialMantelResult:
    """Partial correlation of x and y given z over the upper triangles, permuting x's items.

    The statistic is the correlation of the residuals of x and of y on z (Smouse, Long &
    Sokal 1986), computed as ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))``; with
    ``spearman`` on the ranked triangles (partial Spearman). Each permutation of x's items
    recomputes ``r_xy`` and ``r_xz``, y and z stay fixed, as in Smouse et al. Legendre
    (2000) reports this can be somewhat liberal when x and z are strongly correlated.
    """
    method, alternative, permutations, seed = _options(method, alternative, permutations, seed)
    tx, ty, tz = _triangle(x, "x"), _triangle(y, "y"), _triangle(z, "z")
    n = _same_size(tx, ty, ("x", "y"))
    _same_size(tx, tz, ("x", "z"))
    sx, sy, sz = (_scores(t, method, name) for t, name in ((tx, "x"), (ty, "y"), (tz, "z")))
    r_yz = float(sy @ sz)
    if 1.0 - r_yz**2 <= 1e-12:
        checks.fail("z", f"y is a perfect linear function of z over the upper triangle (r = {r_yz:.6g}); "
                         "the partial correlation is undefined")
    r_xy, r_xz = float(sx @ sy), float(sx @ sz)
    if 1.0 - r_xz**2 <= 1e-12:
        checks.fail("z", f"x is a perfect linear function of z over the upper triangle (r = {r_xz:.6g}); "
                         "the partial correlation is undefined")
    r_obs = float(np.clip(_partial(np.array(r_xy), np.array(r_xz), r_yz), -1.0, 1.0))
    sq = _square(sx, n)
    yz = np.column_stack([sy, sz])
    count, total, exact = 0, 0, False
    for perms, exact in _permutations(n, permutations, seed):
        rxy, rxz = (_gather(sq, perms) @ yz).T
        count += count_extreme(r_obs, _partial(rxy, rxz, r_yz), alternative)
        total += len(perms)
    p = exact_p(count, total) if exact else monte_carlo_p(count, total)
    return PartialMantelResult(r_obs, p, r_xy, r_xz, r_yz, n, total, exact, method, alternative)


def pairs_to_matrix(pairs_df: Any, a_col: Any, b_col: Any, value_col: Any, items: Sequence[Hashable], *,
                    diagonal: float = 0.0) -> np.ndarray:
    """The symmetric (n, n) matrix over ``items`` from a long table of unordered pairs.

    Each unordered pair of distinct items must appear exactly once, in either order; a
    missing, repeated or self pair, an unknown item or a non-finite value is an error that
    names it, because a silently filled or dropped pair would bias a Mantel test.
    """
    items = list(items)
    if len(items) < 2:
        checks.fail("items", f"need at least 2 items, got {len(items)}")
    index: dict[Hashable, int] = {}
    for i, item in enumerate(items):
        if item in index:
            checks.fail("items", f"item {item!r} is listed twice")
        index[item] = i
    a = checks.column(pairs_df, a_col, "pairs_df").tolist()
    b = checks.column(pairs_df, b_col, "pairs_df").tolist()
    try:
        v = checks.column(pairs_df, value_col, "pairs_df").astype(np.float64)
    except (TypeError, ValueError):
        checks.fail("pairs_df", f"column {value_col!r} must be numeric")
    ia = _indices(a, index, a_col)
    ib = _indices(b, index, b_col)
    n = len(items)
    same = np.flatnonzero(ia == ib)
    if same.size:
        checks.fail("pairs_df", f"row {int(same[0])} pairs item {items[ia[same[0]]]!r} with itself")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        r = int(bad[0])
        checks.fail("pairs_df", f"pair ({items[ia[r]]!r}, {items[ib[r]]!r}) has non-finite {value_col!r} "
                                f"= {checks.shown(v[r])}")
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    keys, first, counts = np.unique(lo * n + hi, return_index=True, return_counts=True)
    if (counts > 1).any():
        r = int(first[np.argmax(counts > 1)])
        checks.fail("pairs_df", f"pair ({items[lo[r]]!r}, {items[hi[r]]!r}) appears {int(counts.max())} times")
    out = np.full((n, n), np.nan)
    out[lo, hi] = v
    out[hi, lo] = v
    iu, ju = np.triu_indices(n, 1)
    missing = np.flatnonzero(np.isnan(out[iu, ju]))
    if missing.size:
        i, j = int(iu[missing[0]]), int(ju[missing[0]])
        checks.fail("pairs_df", f"lacks {missing.size} of {iu.size} item pairs, first ({items[i]!r}, {items[j]!r})")
    np.fill_diagonal(out, diagonal)
    return out


def _indices(values: list, index: dict[Hashable, int], col: Any) -> np.ndarray:
    try:
        return np.fromiter((index[v] for v in values), dtype=np.intp, count=len(values))
    except (KeyError, TypeError):
        unknown = next(v for v in values if not _known(v, index))
        checks.fail("pairs_df", f"item {unknown!r} in column {col!r} is not in items")


def _known(v: Any, index: dict[Hashable, int]) -> bool:
    try:
        return v in index
    except TypeError:
        return False


def _options(method: str, alternative: str, permutations: int, seed: int) -> tuple[str, str, int, int]:
    return (checks.choice(method, "method", METHODS), checks.choice(alternative, "alternative", ALTERNATIVES),
            checks.count(permutations, "permutations"), checks.seed(seed))


def _triangle(matrix: Any, name: str) -> np.ndarray:
    """Upper-triangle values (row-major, diagonal excluded) of a square symmetric matrix."""
    m = checks.float_array(matrix, name, 2)
    n = m.shape[0]
    if m.shape != (n, n):
        checks.fail(name, f"must be square, got shape {m.shape}")
    if n < 3:
        checks.fail(name, f"needs at least 3 items (3 pairs) for a correlation, got {n}")
    iu, ju = np.triu_indices(n, 1)
    upper, lower = m[iu, ju], m[ju, iu]
    checks.finite(upper, f"{name} (upper triangle)")
    checks.finite(lower, f"{name} (lower triangle)")
    if not np.allclose(upper, lower, rtol=1e-9, atol=1e-12):
        k = int(np.argmax(~np.isclose(upper, lower, rtol=1e-9, atol=1e-12)))
        checks.fail(name, f"must be symmetric; [{iu[k]}, {ju[k]}] = {checks.shown(upper[k])} but "
                          f"[{ju[k]}, {iu[k]}] = {checks.shown(lower[k])}")
    return upper


def _same_size(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> int:
    if a.size != b.size:
        checks.fail(names[1], f"has {_items(b.size)} items but {names[0]} has {_items(a.size)}")
    return _items(a.size)


def _items(pairs: int) -> int:
    return int(round((1 + math.sqrt(1 + 8 * pairs)) / 2))


def _scores(tri: np.ndarray, method: str, name: str) -> np.ndarray:
    """Centred, unit-norm (ranked for Spearman) triangle: the dot product of two is Pearson's r.

    Ranking once is enough: permuting items reorders the same multiset of pair values, so
    the ranks of a permuted triangle are the permuted ranks.
    """
    if np.ptp(tri) == 0:
        checks.fail(name, "all off-diagonal values are equal; the correlation is undefined")
    v = sps.rankdata(tri) if method == "spearman" else tri.astype(np.float64)
    v = v - v.mean()
    return v / np.sqrt(v @ v)


def _square(scores: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, n))
    iu, ju = np.triu_indices(n, 1)
    out[iu, ju] = scores
    out[ju, iu] = scores
    return out


def _gather(square: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """(B, pairs) upper triangles of the matrix with items permuted by each row of ``perms``."""
    iu, ju = np.triu_indices(square.shape[0], 1)
    return square[perms[:, iu], perms[:, ju]]


def _partial(r_xy: np.ndarray, r_xz: np.ndarray, r_yz: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (r_xy - r_xz * r_yz) / np.sqrt((1.0 - r_xz**2) * (1.0 - r_yz**2))


def _permutations(n: int, permutations: int, seed: int) -> Iterator[tuple[np.ndarray, bool]]:
    """Batches of item permutations, each with whether the enumeration is exact.

    All n! (identity included) when that is at most ``permutations``; otherwise
    ``permutations`` uniform random ones from ``default_rng(seed)``.
    """
    batch = max(1, _BATCH_VALUES // (n * (n - 1) // 2))
    if math.factorial(n) <= permutations:
        it = itertools.permutations(range(n))
        while True:
            flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(it, batch)), dtype=np.intp)
            if flat.size == 0:
                return
            yield flat.reshape(-1, n), True
    rng = np.random.default_rng(seed)
    base = np.arange(n)
    done = 0
    while done < permutations:
        b = min(batch, permutations - done)
        yield rng.permuted(np.broadcast_to(base, (b, n)), axis=1), False
        done += b
