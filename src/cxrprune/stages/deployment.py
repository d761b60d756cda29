"""DVC stage ``deployment``: the deployer's page of this run (``reports/<name>/deployment.md``,
``deployment.json``, ``deployment.png``): per compression method, its operating point, what
the artifact there costs in bytes and latency, and which diseases lose more than
``analyze.class_tolerance`` at each level. Built by :mod:`cxrprune.analysis.deployment` from
the analyze stage's outputs only.
"""

from __future__ import annotations

from cxrprune.analysis import deployment
from cxrprune.core import upstream
from cxrprune.core.config import Params
from cxrprune.core.stage import Stage


STAGE = Stage(name="deployment",
              help="per method: operating point, bytes, latency and the diseases losing more than the tolerance "
                   "at each level (reports/<name>/deployment.md)")


def run(params: Params) -> None:
    out = params.layout
    summary = upstream.read_json(out.summary)
    class_tests = upstream.read_csv(out.class_loss_tests)
    efficiency = upstream.read_csv(out.efficiency)
    forgettability = upstream.read_csv(out.forgettability)
    d = deployment.write(out, summary, class_tests, efficiency, forgettability)
    points = ", ".join(f"{m['method']} {m['operating_point'] if m['operating_point'] is not None else 'n/a'}"
                       for m in d.methods)
    print(f"deployment: {out.deployment_md}: operating points {points}")
