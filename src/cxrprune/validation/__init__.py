"""Planted-effect validation of the report's verdicts (``cxrprune validate``).

Every verdict of ``findings.md`` is a decision rule; this package measures how often the rule
says "reproduced" when nothing was planted (its false-positive rate) and when an effect of a
known size was (its power). :mod:`.generator` writes prediction tables, labels and a
synthetic truth table in the pipeline's own contracts with each finding's mechanism under
one effect size; :mod:`.harness` runs the evaluate and analyze stages' library functions and
:func:`cxrprune.analysis.findings.assess` on them, in memory, over many seeded replicates;
:mod:`.truth` gives the value each interval should cover; :mod:`.report` writes the table.
"""
