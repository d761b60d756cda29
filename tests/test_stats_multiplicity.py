"""cxrprune.stats.multiplicity against the textbook definitions written out here.

Oracles: Holm's step-down rejection rule applied literally (reject H_(1..k-1) where k is the
first j with p_(j) > alpha / (m - j + 1)), the adjusted-value formula by explicit loops, and
the properties every adjustment must have (hypothesis draws the p-values).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrprune.core.errors import CxrpruneError
from cxrprune.stats.multiplicity import bonferroni, holm

PVALUE = st.one_of(st.floats(0.0, 1.0), st.just(float("nan")), st.sampled_from([0.0, 0.01, 0.05, 1.0]))


def holm_by_loops(p: list[float]) -> list[float]:
    """p_adj of the i-th smallest = max over j <= i of min(1, (m - j + 1) p_(j)), 1-based."""
    idx = [i for i, v in enumerate(p) if not np.isnan(v)]
    m = len(idx)
    ranked = sorted(idx, key=lambda i: (p[i], i))
    out = [float("nan")] * len(p)
    running = 0.0
    for j, i in enumerate(ranked, start=1):
        running = max(running, min(1.0, (m - j + 1) * p[i]))
        out[i] = running
    return out


def holm_rejections(p: list[float], alpha: float) -> list[bool]:
    """Holm (1979) as a procedure: step down until the first p_(j) > alpha / (m - j + 1)."""
    idx = sorted((i for i, v in enumerate(p) if not np.isnan(v)), key=lambda i: (p[i], i))
    m = len(idx)
    out = [False] * len(p)
    for j, i in enumerate(idx, start=1):
        if p[i] > alpha / (m - j + 1):
            break
        out[i] = True
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(PVALUE, max_size=25))
def test_holm_equals_the_textbook_definition(p):
    res = holm(p)
    np.testing.assert_allclose(res.as_array(), holm_by_loops(p), rtol=1e-12, atol=0)
    assert res.left_out == tuple(i for i, v in enumerate(p) if np.isnan(v))
    assert res.m == len(p) - len(res.left_out)


@settings(max_examples=300, deadline=None)
@given(st.lists(PVALUE, max_size=25), st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_adjusted_values_reject_what_the_step_down_procedure_rejects(p, alpha):
    assert list(holm(p).rejected(alpha)) == holm_rejections(p, alpha)


@settings(max_examples=300, deadline=None)
@given(st.lists(PVALUE, min_size=1, max_size=25))
def test_properties_raw_le_holm_le_bonferroni_le_1_and_order_kept(p):
    raw = np.asarray(p, dtype=float)
    h, b = holm(p).as_array(), bonferroni(p).as_array()
    ok = ~np.isnan(raw)
    assert np.array_equal(np.isnan(h), ~ok) and np.array_equal(np.isnan(b), ~ok)
    assert (raw[ok] <= h[ok] + 1e-15).all() and (h[ok] <= b[ok] + 1e-15).all() and (b[ok] <= 1).all()
    np.testing.assert_allclose(b[ok], np.minimum(1, ok.sum() * raw[ok]))
    order = np.argsort(raw[ok], kind="stable")
    assert (np.diff(h[ok][order]) >= -1e-15).all()  # monotone in the raw p-values


def test_random_arrays_against_the_loops():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 40):
        p = rng.uniform(size=m) ** 3
        p[rng.random(m) < 0.2] = np.nan
        np.testing.assert_allclose(holm(p).as_array(), holm_by_loops(p.tolist()), rtol=1e-12)


def test_nan_left_out_and_listed():
    res = holm([0.01, np.nan, 0.04, 0.03])
    assert res.left_out == (1,) and res.m == 3
    assert res.to_dict() == {"method": "holm", "adjusted": [0.03, None, 0.06, 0.06], "left_out": [1], "m": 3}
    assert json.loads(json.dumps(res.to_dict())) == res.to_dict()
    assert res.rejected(0.05) == (True, False, False, False)
    assert holm([]).m == 0 and holm([np.nan]).adjusted[0] != holm([np.nan]).adjusted[0]


@pytest.mark.parametrize("bad, match", [([0.1, 1.5], "entry 1 is 1.5"), ([-0.1], "entry 0"),
                                        ([0.1, np.inf], "entry 1 is inf"), ([[0.1]], "must be 1-D"),
                                        (["x"], "must be numeric")])
def test_bad_input_is_a_cxrprune_error_naming_the_argument(bad, match):
    for fn in (holm, bonferroni):
        with pytest.raises(CxrpruneError, match=f"^pvalues: .*{match}"):
            fn(bad)
