"""Statistical tests with the right unit of analysis, and the per-class metrics they test:
the low layer of the study.

The analysis, training and study packages import these tests; this package imports none of
them (only :class:`cxrprune.core.errors.CxrpruneError` for bad input), no torch, and needs
pandas only where a caller hands it a table. Every test says which null it permutes or
which distribution it assumes, is deterministic given ``seed``, and returns a frozen result
with ``to_dict()`` of plain floats, ints and None.

Modules:

- :mod:`~cxrprune.stats.metrics`: exact, vectorised per-class AP, AUROC and F1 (what training
  validates on and every stage scores predictions with; here, below ``training``, so that the
  training loop needs nothing from ``analysis``);
- :mod:`~cxrprune.stats.mantel`: Mantel (1967) and partial Mantel (Smouse, Long & Sokal 1986)
  permutation tests between matrices over classes, and :func:`~cxrprune.stats.mantel.pairs_to_matrix`;
- :mod:`~cxrprune.stats.enrichment`: are flagged images (PIEs) enriched among the positives of
  rare classes? A smoothed per-class enrichment over every class and a flag-permutation test;
- :mod:`~cxrprune.stats.noninferiority`: one-sided non-inferiority t test against a margin and
  the fixed-sequence procedure over compression levels (Maurer, Hothorn & Lehmacher 1995);
- :mod:`~cxrprune.stats.power`: the minimum detectable effect of a t test (exact noncentral t);
- :mod:`~cxrprune.stats.order`: the distribution-free (sign-test) interval of a median;
- :mod:`~cxrprune.stats.signflip`: the sign-flip test of a mean within-unit difference (the
  frequency intervention's within-class contrasts);
- :mod:`~cxrprune.stats.multiplicity`: Holm (1979) and Bonferroni adjusted p-values;
- :mod:`~cxrprune.stats.clustered`: reader-study comparisons with the image, not the rating,
  as the unit (no pseudo-replication);
- :mod:`~cxrprune.stats.permutation`: p-values from a permutation distribution (shared);
- :mod:`~cxrprune.stats.checks`: argument checks that raise one clear ``CxrpruneError``;
- :mod:`~cxrprune.stats.results`: plain-value conversion for the results' ``to_dict()``.
"""
