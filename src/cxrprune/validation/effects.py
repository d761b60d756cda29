"""The effect size every planted mechanism scales with, and its valid range.

A module of its own, free of the analysis imports (torch among them), so that the command
line refuses a bad ``--effects`` at once.
"""

from __future__ import annotations

import math

from cxrprune.core.errors import ConfigError

EFFECT_RANGE = (0.0, 1.0)
"""Valid effect sizes: 0 plants nothing, 1 plants every mechanism at its full strength
(:class:`cxrprune.validation.generator.Design`); each mechanism is linear in ``e`` between
(in the forgetting points and in the log fragility)."""


def check_effect(effect: float, option: str = "effect") -> float:
    """``effect`` as a float inside :data:`EFFECT_RANGE`; else a :class:`ConfigError` naming ``option``."""
    lo, hi = EFFECT_RANGE
    if not isinstance(effect, (int, float)) or isinstance(effect, bool) or not math.isfinite(effect) \
            or not lo <= effect <= hi:
        raise ConfigError(f"{option}: effect sizes must be numbers in [{lo:g}, {hi:g}] "
                          f"(0 = nothing planted, 1 = every mechanism at full strength), got {effect!r}")
    return float(effect)
