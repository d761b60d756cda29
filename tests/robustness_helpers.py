"""Tiny git + DVC workspaces for the robustness tests (built on tests/test_pipeline.py's helpers)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from workspaces import env, make_workspace, run, tiny_params


def tiny_workspace(dest: Path, seeds=(0,), levels=(0.0, 0.9), epochs: int = 2, patience: int = 1,
                   **train) -> Path:
    """make_workspace with one seed, two levels (0.9 is analyze.pie_sparsity), the paper's two
    methods (l1, random: these tests are about interruptions, not compression methods) and the
    given train settings, committed."""
    make_workspace(dest)
    params = tiny_params()
    params["seeds"] = list(seeds)
    params["train"].update(epochs=epochs, patience=patience, **train)
    params["prune"]["levels"] = list(levels)
    params["prune"]["methods"] = ["l1", "random"]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qam", "robustness"],
        dest)
    return dest


def cxrprune(args: list[str], cwd: Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    """``cxrprune ARGS`` in ``cwd`` with the test environment (no DVC_/MLFLOW_ variables) plus ``extra_env``."""
    proc = subprocess.run(["cxrprune", *args], cwd=cwd, env={**env(), **extra_env}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"cxrprune {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def popen_cxrprune(args: list[str], cwd: Path, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(["cxrprune", *args], cwd=cwd, env={**env(), **extra_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
