"""cxrprune.stats is the low layer: it imports no torch, no pandas and no other cxrprune
package but the error type, so that analysis, training and studies can all import it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import cxrprune.stats

PACKAGE = Path(cxrprune.stats.__file__).parent
ALLOWED = {"cxrprune.core.errors"}


def test_source_imports_only_the_error_type_from_cxrprune_and_no_torch():
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"torch", "torchvision", "pandas"}, f"{path.name} imports {name}"
                if name.startswith("cxrprune") and not name.startswith("cxrprune.stats"):
                    assert name in ALLOWED, f"{path.name} imports {name}"


def test_importing_every_module_loads_no_torch_pandas_or_other_cxrprune_package():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module('cxrprune.stats.' + m)\n"
            "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('torch', 'pandas', 'cxrprune'))))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded = set(json.loads(out.stdout))
    assert loaded <= {"cxrprune", "cxrprune.core"} | ALLOWED | {f"cxrprune.stats.{m}" for m in modules} | {"cxrprune.stats"}
