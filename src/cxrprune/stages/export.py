"""``cxrprune export`` (a tool, not a DVC stage): the deployable artifact the deployment report
points at, made on demand (:mod:`cxrprune.compression.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrprune.compression.export import describe, export
from cxrprune.core import catalog
from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError
from cxrprune.core.stage import Stage


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="one of params.yaml's prune.methods (l1, channel, int8, ...)")
    p.add_argument("--level", type=float, required=True,
                   help="one of prune.levels the study ran (0 for a one-level method such as int8)")
    p.add_argument("--seed", type=int, default=None, help="whose model (default: the first of params.yaml's seeds)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write it (default: data/artifacts/<name>/seed-<s>/<method>-<level>.pt or .onnx)")


STAGE = Stage(name="export",
              help="write one deployable artifact (a seed's model, one method and level) with a sidecar saying "
                   "how to load it, checked against the study's predictions",
              arguments=_arguments)


def run(params: Params, method: str, level: float, seed: int | None = None, out: str | None = None) -> None:
    if method not in catalog.METHODS:
        raise ConfigError(f"--method {method} is not a compression method ({', '.join(catalog.method_names())})")
    seed = params.seeds[0] if seed is None else seed
    suffix = ".onnx" if catalog.METHODS[method].artifact_format == "onnx" else ".pt"
    path = Path(out) if out else params.layout.artifact_file(method, level, seed, suffix)
    print(describe(export(params, seed, method, level, path)))
