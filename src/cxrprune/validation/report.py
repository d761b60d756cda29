"""Verdict rates of many replicates: false-positive rate, power, verdict shares, coverage.

Per finding and effect size: the share of replicates whose verdict is "reproduced" (at
``e = 0`` the false-positive rate, at ``e > 0`` the power) with its Monte Carlo 95% Wilson
interval, the share of every verdict, and, where the finding has an interval and the run
computed intervals, the coverage: the share of replicates whose 95% interval contains the
target of :mod:`cxrprune.validation.truth`, with its Wilson interval. ``verdicts.json`` holds
the numbers, ``verdicts.txt`` the same as tables; both are written atomically.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from cxrprune.analysis import findings
from cxrprune.core.atomic import json_clean, write_json, write_text
from cxrprune.validation.harness import KEYS, Config, Outcome

FLAG_FPR = 0.07
"""A false-positive rate above this is flagged in the text: above the nominal 0.05 by more
than the Monte Carlo error of 200 replicates (Wilson half-width ~0.03)."""
_CLAIMS = {c.key: c for c in findings.CLAIMS}


@dataclass(frozen=True)
class Rate:
    """``count`` of ``n`` replicates, the share and its Monte Carlo 95% Wilson interval."""

    count: int
    n: int
    rate: float | None
    ci: tuple[float, float] | None


def rate(count: int, n: int) -> Rate:
    """The share ``count / n`` with its 95% Wilson interval (None when ``n`` is 0)."""
    if n == 0:
        return Rate(0, 0, None, None)
    ci = stats.binomtest(int(count), int(n)).proportion_ci(0.95, method="wilson")
    return Rate(int(count), int(n), count / n, (float(ci.low), float(ci.high)))


def covered(interval: Sequence[float | None] | None, target: float | None) -> bool | None:
    """Whether ``interval`` contains ``target``; None when either is missing."""
    if interval is None or target is None or len(interval) != 2 or None in interval:
        return None
    return float(interval[0]) <= target <= float(interval[1])


def target_verdict(key: str, target: float | None, alpha: float) -> str | None:
    """The verdict a threshold finding's rule gives its target (the true safe level): whether
    "reproduced" would be right; None without a target or for a directional finding."""
    claim = _CLAIMS[key]
    if claim.direction != 0 or target is None:
        return None
    return findings.verdict(claim, findings.Measurement(target), alpha)


def summarize(outcomes: list[Outcome], effects: Sequence[float], alpha: float) -> dict[str, Any]:
    """Per finding of :data:`~cxrprune.validation.harness.KEYS`: rates per effect size. A
    threshold finding (safe sparsity) has no planted null: its false-positive rate is the
    share "reproduced" among the replicates whose true safe level says "not reproduced"
    (``given_truth``), with the other side beside it."""
    out: dict[str, Any] = {}
    for key in KEYS:
        claim = _CLAIMS[key]
        per_effect: dict[str, Any] = {}
        for e in effects:
            rows = [o for o in outcomes if o.effect == e]
            verdicts = [o.verdicts[key] for o in rows]
            hits = [covered(o.intervals[key], o.targets.get(key)) for o in rows]
            judged = [h for h in hits if h is not None]
            values = [o.values[key] for o in rows if o.values[key] is not None]
            targets = [o.targets[key] for o in rows if o.targets.get(key) is not None]
            per_effect[_effect_name(e)] = {
                "reproduced": asdict(rate(sum(v == findings.REPRODUCED for v in verdicts), len(verdicts))),
                "verdicts": {v: sum(x == v for x in verdicts) / len(verdicts) for v in findings.VERDICTS
                             if any(x == v for x in verdicts)},
                "coverage": asdict(rate(sum(judged), len(judged))) if judged else None,
                "mean_value": float(np.mean(values)) if values else None,
                "mean_target": float(np.mean(targets)) if targets else None,
            }
            truth = [(target_verdict(key, o.targets.get(key), alpha), o.verdicts[key]) for o in rows]
            if any(t is not None for t, _ in truth):
                per_effect[_effect_name(e)]["given_truth"] = {
                    side: asdict(rate(sum(v == findings.REPRODUCED for t, v in truth if (t == findings.REPRODUCED)
                                          == (side == "true_reproduced") and t is not None),
                                      sum(1 for t, _ in truth if t is not None
                                          and (t == findings.REPRODUCED) == (side == "true_reproduced"))))
                    for side in ("true_not_reproduced", "true_reproduced")}
        out[key] = {"title": claim.title, "statistic": claim.statistic,
                    "threshold_finding": claim.direction == 0, "by_effect": per_effect}
    return out


def document(config: Config, outcomes: list[Outcome], effects: Sequence[float], *, replicates: int, seed: int,
             workers: int, command: str, wall_seconds: float) -> dict[str, Any]:
    """``verdicts.json``: what was run, the rates, and the machine it ran on."""
    seconds, cpu = [o.seconds for o in outcomes], [o.cpu_seconds for o in outcomes]
    return json_clean({
        "what": ("share of replicates per verdict of cxrprune.analysis.findings.assess, on planted-effect "
                 "prediction tables run through the evaluate and analyze stages' functions "
                 "(cxrprune.validation); e = 0 plants nothing: 'reproduced' there is a false positive"),
        "replicates": replicates,
        "effects": list(effects),
        "seed": seed,
        "resamples": config.resamples,
        "intervals": ("bootstrap intervals on: a verdict needs p and interval, as in the report"
                      if config.resamples else
                      "no intervals: a verdict rests on its p-value alone, so each false-positive rate is an "
                      "upper bound of the report's (which also needs the interval to exclude the null)"),
        "design": {**asdict(config.design), "n_seeds": config.n_seeds, "levels": list(config.levels),
                   "evaluate": asdict(config.evaluate), "analyze": asdict(config.analyze)},
        "findings": summarize(outcomes, effects, config.evaluate.alpha),
        # Wall time depends on who else uses the machine; CPU time is what a replicate costs.
        "seconds_per_replicate": {"wall_median": float(np.median(seconds)), "cpu_median": float(np.median(cpu)),
                                  "cpu_mean": float(np.mean(cpu)), "cpu_total": float(np.sum(cpu))}
        if seconds else None,
        "footer": footer(command, wall_seconds, workers),
    })


def footer(command: str, wall_seconds: float, workers: int) -> dict[str, Any]:
    """The exact command, the CPU, the wall time and the versions of what computed it."""
    versions = {"python": platform.python_version()}
    for package in ("cxrprune", "numpy", "scipy", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"command": command, "cpu": cpu_model(), "workers": workers, "wall_seconds": round(wall_seconds, 1),
            "git_commit": _git_commit(), "versions": versions}


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    """HEAD, with ``+changes`` when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def text(doc: dict[str, Any]) -> str:
    """``verdicts.txt``: the rates as tables, flagged false-positive rates, then the footer."""
    effects = [_effect_name(e) for e in doc["effects"]]
    null = "0" if "0" in effects else None
    lines = [f"Verdict rates of the report's rules on planted effects: {doc['replicates']} replicates per "
             f"effect size, seed {doc['seed']}; {doc['intervals']}.",
             "e = 0 plants nothing ('reproduced' = false positive); e > 0 plants every mechanism "
             "(cxrprune.validation.generator). Brackets: Monte Carlo 95% Wilson intervals.", ""]
    head = ["finding", *(("FPR e=0" if e == null else f"power e={e}") for e in effects)]
    rows = []
    for key, f in doc["findings"].items():
        cells = [key]
        for e in effects:
            r = f["by_effect"][e]["reproduced"]
            cells.append(f"{_share(r)}" + (" (threshold)" if f["threshold_finding"] else ""))
        rows.append(cells)
    lines += _table(head, rows) + [""]
    lines.append("Coverage of the 95% intervals (share containing the target, cxrprune.validation.truth):")
    cov_rows = [[key, *(_share(f["by_effect"][e]["coverage"]) if f["by_effect"][e]["coverage"] else "-"
                        for e in effects)]
                for key, f in doc["findings"].items()]
    lines += _table(["finding", *(f"e={e}" for e in effects)], cov_rows) + [""]
    lines.append("Verdict shares (reproduced / same direction, not significant / not reproduced / opposite / "
                 "not estimable / not measured):")
    share_rows = [[key, *("/".join(f"{f['by_effect'][e]['verdicts'].get(v, 0):.2f}" for v in findings.VERDICTS)
                          for e in effects)] for key, f in doc["findings"].items()]
    lines += _table(["finding", *(f"e={e}" for e in effects)], share_rows) + [""]
    if null is not None:
        flagged = [(k, f["by_effect"][null]["reproduced"]) for k, f in doc["findings"].items()
                   if not f["threshold_finding"] and (f["by_effect"][null]["reproduced"]["rate"] or 0) > FLAG_FPR]
        lines.append(f"False-positive rates above {FLAG_FPR:g} (the verdict says 'reproduced' with nothing planted):")
        lines += [f"  {k}: {_share(r)}" for k, r in flagged] or ["  none"]
        lines.append("")
    safe = doc["findings"].get("safe_sparsity", {}).get("by_effect", {})
    lines.append("safe_sparsity is a threshold finding (largest level shown non-inferior >= 60%): no effect size "
                 "plants it, so its row above is the share 'reproduced' at each setting; against the true safe "
                 "level of each replicate (population mAP, cxrprune.validation.truth):")
    for e in effects:
        g = safe.get(e, {}).get("given_truth")
        if g:
            lines.append(f"  e={e}: reproduced when truly not safe at 60% (false positive) "
                         f"{_share(g['true_not_reproduced'])} of {g['true_not_reproduced']['n']}; "
                         f"when truly safe {_share(g['true_reproduced'])} of {g['true_reproduced']['n']}")
    if not any(safe.get(e, {}).get("given_truth") for e in effects):
        lines.append("  (needs --resamples > 0: the targets are computed with the intervals)")
    foot = doc["footer"]
    per = doc.get("seconds_per_replicate") or {}
    lines += ["", f"command: {foot['command']}", f"cpu: {foot['cpu']} ({foot['workers']} worker processes)",
              f"wall time: {foot['wall_seconds']} s; per replicate: CPU median {per.get('cpu_median', 0):.2f} s, "
              f"wall median {per.get('wall_median', 0):.2f} s in its worker; all replicates "
              f"{per.get('cpu_total', 0) / 60:.1f} CPU-minutes "
              f"({per.get('cpu_total', 0) / 120:.1f} min on 2 free cores)",
              f"git: {foot['git_commit']}",
              "versions: " + ", ".join(f"{k} {v}" for k, v in foot["versions"].items())]
    return "\n".join(lines) + "\n"


def write(out: str | Path, doc: dict[str, Any]) -> tuple[Path, Path]:
    """``<out>.json`` and ``<out>.txt``, each atomically."""
    out = Path(out)
    paths = out.with_name(out.name + ".json"), out.with_name(out.name + ".txt")
    write_json(paths[0], doc)
    write_text(paths[1], text(doc))
    return paths


def _effect_name(e: float) -> str:
    """0.5 -> "0.5", 1.0 -> "1": the JSON key of an effect size."""
    return f"{e:g}"


def _share(r: dict[str, Any] | None) -> str:
    if not r or r["rate"] is None:
        return "-"
    lo, hi = r["ci"]
    return f"{r['rate']:.3f} [{lo:.3f}, {hi:.3f}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(head), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)]
