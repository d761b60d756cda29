"""What each Ray task asks for: one GPU per seed where the cluster has GPUs, else an equal
share of the CPUs (and as many torch threads), plus optional custom resources."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cxrprune.scaleout.common import ScaleoutError

# ------------------------------------------------------------------- resources per task


@dataclass
class TaskResources:
    num_cpus: int
    num_gpus: int
    threads: int
    resources: dict[str, float]

    def describe(self) -> str:
        extra = "".join(f", {k}={v:g}" for k, v in self.resources.items())
        gpu = f"{self.num_gpus} GPU + " if self.num_gpus else ""
        return f"{gpu}{self.num_cpus} CPU ({self.threads} torch thread{'s' * (self.threads != 1)}){extra}"


def task_resources(nodes: list[dict[str, float]], n_parallel: int, num_cpus: int | None = None,
                   num_gpus: int | None = None, custom: dict[str, float] | None = None) -> TaskResources:
    """What each seed task asks Ray for, from the alive nodes' resources.

    GPUs in the cluster (on nodes holding the ``custom`` resources): one GPU per task and
    the CPUs that the scarcest GPU node has per GPU. No GPUs: an equal share of all CPUs
    among ``n_parallel`` tasks, at least 1 and at most what the largest node has.
    Torch threads follow the CPUs.
    """
    custom = dict(custom or {})
    eligible = [n for n in nodes if all(n.get(k, 0) >= v for k, v in custom.items())] or nodes
    gpu_nodes = [n for n in eligible if n.get("GPU", 0) >= 1]
    if num_gpus is None:
        num_gpus = 1 if gpu_nodes else 0
    if num_cpus is None:
        if num_gpus:
            per_gpu = [int(n.get("CPU", 0) // n["GPU"]) for n in gpu_nodes] or [1]
            num_cpus = max(1, min(per_gpu) * num_gpus)
        else:
            total = sum(n.get("CPU", 0) for n in eligible)
            largest = max((n.get("CPU", 0) for n in eligible), default=1)
            num_cpus = int(max(1, min(total // max(1, n_parallel), largest)))
    return TaskResources(int(num_cpus), int(num_gpus), max(1, int(num_cpus)), custom)


def parse_resources(text: str | None) -> dict[str, float]:
    """``--resources '{"worker_node": 0.5}'`` -> a dict of Ray custom resources."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ScaleoutError(f"--resources must be a JSON object like '{{\"gpu_box\": 1}}', got {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                              for v in value.values()):
        raise ScaleoutError(f"--resources must map names to positive numbers, got {text!r}")
    return {str(k): float(v) for k, v in value.items()}
