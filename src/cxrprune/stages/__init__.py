"""The stages: one module per ``cxrprune`` command, each a thin entry point that declares
itself with ``STAGE = Stage(...)`` (:mod:`cxrprune.core.stage`) next to its
``run(params, **cli_args)``. No stage module imports another, nor this package.
"""
