"""The ``cxrprune`` command: one sub-command per pipeline stage, plus tools.

Each stage's logic lives in library modules; ``cxrprune.stages.<name>.run`` is the thin
entry point that ``dvc.yaml`` calls through this command, and the module's ``STAGE``
declaration (:class:`cxrprune.core.stage.Stage`) is its row in the table of commands. A
:class:`CxrpruneError` is printed as one line (``cxrprune: error: ...``) with exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from cxrprune.core import stage as stages
from cxrprune.core.errors import CxrpruneError


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, only that command's options are added
    (only its stage module is imported: each imports its own heavy libraries; ``""``: none,
    enough for ``cxrprune --help`` and for an unknown command's error)."""
    parser = argparse.ArgumentParser(prog="cxrprune", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, d in stages.declared().items():
        p = sub.add_parser(name, help=d.help, description=d.help)
        if command is None or name == command:
            stages.load(d.module).STAGE.add_arguments(p)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command word of ``argv`` (the first word that is not an option or ``--params``' value)."""
    words = iter(argv)
    for word in words:
        if word == "--params":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    known = stages.declared()
    parser = build_parser(command if command in known else "")
    args = parser.parse_args(argv)
    module = stages.load(known[args.command].module)
    try:
        from cxrprune.core.config import load_params

        params = load_params(args.params)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "params")}
        module.STAGE.check(params, kwargs)
        module.run(params, **kwargs)
    except CxrpruneError as exc:
        print(f"cxrprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrprune: interrupted; finished outputs are kept, rerun the stage to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
