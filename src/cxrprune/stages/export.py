"""``cxrprune export`` (a tool, not a DVC stage): the deployable artifact the deployment report
points at, made on demand (:mod:`cxrprune.compression.export`)."""

from __future__ import annotations

from pathlib import Path

from cxrprune.compression.export import describe, export
from cxrprune.core import catalog
from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError


def run(params: Params, method: str, level: float, seed: int | None = None, out: str | None = None) -> None:
    if method not in catalog.METHODS:
        raise ConfigError(f"--method {method} is not a compression method ({', '.join(catalog.method_names())})")
    seed = params.seeds[0] if seed is None else seed
    suffix = ".onnx" if catalog.METHODS[method].artifact_format == "onnx" else ".pt"
    path = Path(out) if out else params.layout.artifact_file(method, level, seed, suffix)
    print(describe(export(params, seed, method, level, path)))
