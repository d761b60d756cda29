"""Comparing lists of tensors (masks, weights) in tests."""

from __future__ import annotations

import torch


def tensors_equal(a, b) -> bool:
    """Same number of tensors (at least one) and each pair equal: a truncated list must not
    compare equal by ``zip`` stopping early."""
    a, b = list(a), list(b)
    assert a and b, "nothing to compare"
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
