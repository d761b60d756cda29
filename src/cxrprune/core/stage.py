"""What a stage is: the ``Stage`` declaration each ``cxrprune.stages.<name>`` module makes with a
module-level ``STAGE = Stage(...)`` next to its ``run(params, **cli_args)``, and the reading of
those declarations.

The declaration is the one place that says a stage's command name, its help, its options,
which seeds it fans out over and (through :mod:`cxrprune.core.layout`'s ``@writes`` marks)
which outputs it writes. The CLI builds its table of commands from the declarations
(:func:`declared`) and checks ``--seed`` once (:meth:`Stage.check`). It lives here, a library
module, so that no stage module imports the package of stages.

``declared`` reads the name and help of every declaration from the module's source with
``ast`` instead of importing it: the stage modules import torch, pandas and MLflow (seconds),
and ``cxrprune generate`` or ``cxrprune --help`` must not pay for every other stage's
imports. So ``name`` and ``help`` are literal strings; ``tests/test_cli_stages.py`` checks
that the source reading agrees with the imported declarations.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from cxrprune.core.errors import ConfigError
from cxrprune.core.layout import written_by

ArgumentAdder = Callable[[argparse.ArgumentParser], None]
# The stage modules, found by name: this low module declares what a stage is, and the package
# of stages sits above every other layer, so it is never imported here (tests/test_layers.py).
STAGES_PACKAGE = "cxrprune.stages"
STAGES_DIR = Path(__file__).resolve().parents[1] / "stages"


@dataclass(frozen=True)
class Stage:
    """What a stage module declares about itself.

    ``name``: the ``cxrprune`` command, also the DVC stage name (``dvc.yaml``, or a study's);
    ``help``: one line for ``cxrprune --help``; ``arguments``: adds the command's own options;
    ``fan_out``: the params key listing the seeds the stage runs one at a time (``seeds``,
    ``pie_treatment.seeds``): the CLI adds ``--seed`` (after the stage's own options) and
    checks that it is one of them before the stage runs; ``seed_required=False`` makes
    ``--seed`` optional (the stage then runs every seed)."""

    name: str
    help: str
    arguments: ArgumentAdder | None = None
    fan_out: str | None = None
    seed_required: bool = True

    @property
    def produces(self) -> tuple[str, ...]:
        """The :class:`~cxrprune.core.layout.Layout` entries this stage writes (a DVC stage's
        outputs; a tool's files, such as ``compare``'s, are constants of that module)."""
        return written_by(self.name)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if self.arguments is not None:
            self.arguments(parser)
        if self.fan_out is not None:
            if self.seed_required:
                parser.add_argument("--seed", type=int, required=True, help="which of params.yaml's seeds")
            else:
                parser.add_argument("--seed", type=int, default=None,
                                    help="one of params.yaml's seeds (default: every seed)")

    def check(self, params: Any, args: dict) -> None:
        """The checks of the parsed options that need params.yaml, before the stage runs."""
        seed = args.get("seed")
        if self.fan_out is None or seed is None:
            return
        seeds = params
        for part in self.fan_out.split("."):
            seeds = getattr(seeds, part)
        if seed not in seeds:
            raise ConfigError(f"--seed {seed} is not in params.yaml {self.fan_out} {seeds}")


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a stage whose only option, if any, is ``--seed``."""


@dataclass(frozen=True)
class Declared:
    """A stage's declaration as read from its source, without importing it."""

    module: str  # under cxrprune.stages
    name: str
    help: str


def declared() -> dict[str, Declared]:
    """Every stage module's declared name and help, by command name (in module order)."""
    out: dict[str, Declared] = {}
    for info in sorted(pkgutil.iter_modules([str(STAGES_DIR)]), key=lambda m: m.name):
        d = _read(info.name)
        if d.name in out:
            raise RuntimeError(f"stages {out[d.name].module} and {d.module} both declare {d.name!r}")
        out[d.name] = d
    return out


def _read(module: str) -> Declared:
    path = STAGES_DIR / f"{module}.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["STAGE"]
                and isinstance(node.value, ast.Call)):
            kw = {k.arg: k.value for k in node.value.keywords}
            return Declared(module, ast.literal_eval(kw["name"]), ast.literal_eval(kw["help"]))
    raise RuntimeError(f"{path}: no module-level STAGE = Stage(name=..., help=..., ...)")


def load(module: str) -> ModuleType:
    """Imports the stage module (and with it everything its ``run`` needs)."""
    return importlib.import_module(f"{STAGES_PACKAGE}.{module}")
