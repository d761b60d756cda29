"""Are PIEs enriched for rare classes? (Analysis 4, the poster's "rare classes 3-15x
over-represented among PIEs".)

A module of its own rather than part of :mod:`cxrprune.analysis.pies`: the PIE treatment
study imports that module, and DVC would rerun its retraining for a change that is not its.

The statistic is :func:`cxrprune.stats.enrichment.class_enrichment` over EVERY class with a
test positive. The earlier statistic, ln(PIE prevalence ratio) vs ln(train count) over the
classes that have a PIE (a finite log ratio), selects a rare class exactly when chance put
one of its few positives among the PIEs, and then its ratio is large: random PIEs alone gave
rho ~ -0.6. Here every class keeps its smoothed enrichment ln((k + 0.5) / (n q + 0.5)) and the
p-value permutes the PIE flags (between and within patients: images of one patient share
anatomy and labels), so the same smoothing acts on every null draw. Smoothing does not centre
rho at 0 for random PIEs: rho is read against ``class_enrichment_null_mean_rho``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cxrprune.core.errors import CxrpruneError
from cxrprune.stats.enrichment import class_enrichment

PERMUTATIONS = 9999
"""Permutations of the PIE flags. Not a study parameter: it sets only the Monte Carlo error of
the p-value (standard error ~0.002 near p = 0.05; the smallest p it can give is 1e-4)."""
SEED = 0  # the same inputs give the same p-value
ALTERNATIVE = "less"  # the paper's direction: rare (low-frequency) classes enriched, rho below its null
TEST = (f"Spearman rho of the smoothed log PIE enrichment vs ln(train count) over every class with a test "
        f"positive; one-sided (rare classes enriched: rho below its permutation null); {PERMUTATIONS} "
        f"permutations of the PIE flags between and within patients (seed {SEED})")


def rare_class_enrichment(is_pie: np.ndarray, labels: np.ndarray, train_counts: Sequence[float],
                          patients: Sequence[str] | None, classes: Sequence[str]) -> tuple[dict[str, Any], np.ndarray]:
    """The ``pie.class_enrichment_*`` keys of summary.json and each class's smoothed log
    enrichment (NaN for a class without a test positive).

    ``is_pie`` (N,), ``labels`` (N, C) 0/1 test labels and ``patients`` (N,) (None: every
    image its own patient) in one image order; ``train_counts`` (C,) in the order of
    ``classes``. A class without a test positive or without training positives is listed in
    ``class_enrichment_excluded`` with the reason. When the test cannot be done (no PIE, every
    image a PIE, fewer than 3 usable classes) the numbers are NaN and ``class_enrichment_note``
    gives the test's own reason.
    """
    nan = float("nan")
    out: dict[str, Any] = {"class_enrichment_test": TEST}
    try:
        res = class_enrichment(np.asarray(is_pie, dtype=bool), labels, np.asarray(train_counts, dtype=np.float64),
                               permutations=PERMUTATIONS, seed=SEED,
                               clusters=None if patients is None else np.asarray(patients).astype(str),
                               alternative=ALTERNATIVE, classes=list(classes))
    except CxrpruneError as exc:  # the test refuses inputs it cannot answer, and says why
        out.update(class_enrichment_rho=nan, class_enrichment_p=nan, class_enrichment_null_mean_rho=nan,
                   class_enrichment_n_classes=0, class_enrichment_excluded=[], class_enrichment_note=str(exc))
        return out, np.full(len(classes), nan)
    out.update(class_enrichment_rho=res.rho, class_enrichment_p=res.p, class_enrichment_null_mean_rho=res.null_mean_rho,
               class_enrichment_n_classes=res.n_classes,
               class_enrichment_excluded=[{"class": c.name, "reason": c.reason} for c in res.per_class
                                          if not c.included])
    return out, np.array([c.enrichment for c in res.per_class], dtype=np.float64)
