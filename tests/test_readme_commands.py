"""The README's `make` targets for looking at results, run in a clone of the repository on
the shared tiny study (the other advertised commands have their own files: `make repro` builds
the shared study (test_pipeline.py reads it), `make repro-ray` with and without a study file as
target: test_scaleout.py and test_pie_treatment.py, `cxrprune compare`: test_compare.py, the
audit of a trained model (`dvc add` + `dvc repro` with `model.source: checkpoint`): test_checkpoint_import.py).

Each test works on a private copy of the study: `make plots` writes into the workspace and
DVC commands take the repository's lock.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from workspaces import copy_workspace, env, make

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(tiny_study, tmp_path) -> Path:
    return copy_workspace(tiny_study[0], tmp_path / "ws")


def test_make_help_lists_every_advertised_target(ws):
    out = make("help", ws)
    for target in ("repro", "repro-ray", "test", "plots", "ui", "metrics", "exp-show", "readme-numbers"):
        assert re.search(rf"^  {re.escape(target)}\s", out, re.M), f"make help lacks {target}:\n{out}"


def test_make_plots_writes_a_page_with_every_plot(ws):
    make("plots", ws)
    page = ws / "dvc_plots" / "index.html"
    html = page.read_text()
    assert "vegaEmbed" in html and "cdn.jsdelivr" not in html  # the offline template: Vega inline
    assert "Pareto" in html and "map_vs_sparsity" in html


def test_make_metrics_and_exp_show_read_the_study(ws):
    metrics = make("metrics", ws)
    assert "metrics/synthetic/summary.json" in metrics and "map_dense" in metrics
    shown = make("exp-show", ws)
    assert "map_dense" in shown or "Experiment" in shown, shown[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_ui_prints_the_runs_table_address_and_serves_it(ws):
    port = _free_port()
    stamp = ws / ".dvc" / "tmp" / "test-venv-installed"
    make("help", ws)  # lays the installed-venv stamp (see workspaces.make)
    proc = subprocess.Popen(["make", "--no-print-directory", "ui", f"UI_PORT={port}", f"STAMP={stamp}"], cwd=ws,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    lines: list[str] = []
    try:
        address = None
        deadline = time.monotonic() + 300  # a hang detector: the server answers in seconds
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            m = re.search(r"runs of experiment 'cxrprune': (http://127\.0\.0\.1:\d+/#/experiments/(\d+)\S*)", line)
            if m:
                address, exp_id = m.group(1), m.group(2)
        assert address, "make ui printed no address:\n" + "".join(lines)[-3000:]
        assert f":{port}/" in address and "workflowType=machine_learning" in address
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id={exp_id}"
        doc, last = None, None
        while doc is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(api, timeout=5) as r:
                    doc = json.loads(r.read())
            except OSError as exc:  # not listening yet
                last = exc
                time.sleep(0.5)
        assert doc is not None, f"no answer from {api} ({last}):\n" + "".join(lines)[-3000:]
        assert doc["experiment"]["name"] == "cxrprune"
        with urllib.request.urlopen(address.split("#")[0], timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
