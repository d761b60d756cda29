"""Findings x experiments: every experiment's verdicts and intervals side by side, and how
many independent draws of the data reproduce each finding.

The source is ``dvc exp show --json``: each experiment's ``reports/<name>/findings.json``
(the report stage's DVC metric) and its ``params.yaml``, read from the experiment's own
commit. DVC rather than the MLflow store because DVC is where an experiment is defined
(the params that differ: ``train.arch``, ``prune.methods``, ``data.name``,
``synthetic.seed``), it holds the verdicts as they were computed for that commit, and it
needs no tracking server (users often work offline; the MLflow store may be shared by
other projects or absent on a machine that only has the git history).

Why draws, not experiments, are counted: experiments that ran on one draw of the data
(the same ``synthetic.seed``, differing only in architecture, compression methods or
analysis params) share every accident of that sample, so a finding that is such an
accident shows up in all of them; counted per experiment it would look reproduced five
times over. The rule (:func:`draw_outcome`) is conservative: a draw reproduces a finding
only if every one of its experiments that measured the finding reproduced it.

Why a snapshot is written (:func:`save`, :func:`load`): experiments live in git refs that
a clone does not fetch and ``dvc exp remove`` or ``gc`` deletes, so a table built from them
alone could not be rebuilt from the repository. What was read is committed beside the table
and ``cxrprune compare --from`` rebuilds the same table from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxrprune.analysis.findings import (
    CLAIMS,
    NOT_ESTIMABLE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    OPPOSITE,
    REPRODUCED,
    SAME_DIRECTION,
    finite_number,
)
from cxrprune.analysis.report import fmt_p, fmt_value
from cxrprune.core.atomic import atomic_dir, write_json, write_text
from cxrprune.core.config import DataConfig, SyntheticConfig
from cxrprune.core.errors import CxrpruneError
from cxrprune.core.layout import SYNTHETIC_ROOT, Layout

# What tells experiments apart, in the order shown (params.yaml keys).
AXES = ("train.arch", "prune.methods", "data.name", "synthetic.seed", "synthetic.mechanisms", "train.pretrained",
        "seeds")
SYMBOL = {REPRODUCED: "✅", SAME_DIRECTION: "➖", NOT_REPRODUCED: "❌", OPPOSITE: "⛔", NOT_ESTIMABLE: "❔",
          NOT_MEASURED: "·"}
COLOR = {REPRODUCED: "#2e7d32", SAME_DIRECTION: "#a5d6a7", NOT_REPRODUCED: "#ef9a9a", OPPOSITE: "#c62828",
         NOT_ESTIMABLE: "#fff59d", NOT_MEASURED: "#e0e0e0"}
CELLS = "Cells: verdict symbol, then this run's value [95% CI] and its Holm-adjusted p (`p_holm`)."
DRAW_ROW = "draw"  # the row of the table that numbers each experiment's draw of the data
# `data` params that do not change which images and labels are drawn: `name` only names the
# folders, `workers` only parallelizes, `image_size` resamples the same images. Leaving them
# out of a draw's identity merges experiments, never splits them: the conservative side.
NOT_THE_SAMPLE = ("name", "workers", "image_size")
INDEX = "experiments.json"  # the snapshot's list of experiments: order, commit, prepared-data hash
FINDINGS = "findings.json"
PARAMS = "params.yaml"


@dataclass
class Experiment:
    name: str
    rev: str
    params: dict[str, Any]  # params.yaml as read
    findings: dict[str, Any]  # findings.json
    prepared: str | None = None  # md5 of the prepare stage's output in the experiment's dvc.lock
    axes: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.axes = {}
        for axis in AXES:
            value = _dig(self.params, axis)
            if axis == "seeds" and isinstance(value, list):
                value = len(value)
            if axis == "prune.methods" and isinstance(value, list):
                value = "+".join(map(str, value))
            if axis == "synthetic.mechanisms" and isinstance(value, list):
                value = "+".join(map(str, value)) or "none"  # [] is the negative control
            if axis.startswith("synthetic.") and not self.findings.get("calibration"):
                value = None  # not a synthetic run: the generator's settings mean nothing
            self.axes[axis] = "" if value is None else str(value)

    def finding(self, key: str) -> dict[str, Any]:
        """One claim's entry of findings.json ({} when the report has none)."""
        f = (self.findings.get("findings") or {}).get(key)
        return f if isinstance(f, dict) else {}

    def verdict(self, key: str) -> str:
        return str(self.finding(key).get("verdict", NOT_MEASURED))


def _dig(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# ------------------------------------------------------------------ dvc exp show --json


def _states(entries: list[dict]) -> Iterator[tuple[str, dict]]:
    """(display name, ExpState) of every baseline, the workspace and every experiment."""
    for top in entries:
        rev = str(top.get("rev") or "")
        yield (rev if rev == "workspace" else (top.get("name") or rev[:7])), top
        for rng in top.get("experiments") or []:
            revs = rng.get("revs") or []
            if revs:  # the first rev is the experiment's result
                yield (rng.get("name") or revs[0].get("name") or str(revs[0].get("rev", ""))[:7]), revs[0]


def collect(entries: list[dict]) -> tuple[list[Experiment], list[str]]:
    """Experiments holding a findings report, and a note for each one without."""
    found, skipped = [], []
    for name, state in _states(entries):
        data = state.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        params = params if isinstance(params, dict) else {}
        reports = {path: (res or {}).get("data") for path, res in (data.get("metrics") or {}).items()
                   if path.startswith("reports/") and path.endswith("/findings.json")}
        doc = next((d for d in reports.values() if isinstance(d, dict) and "findings" in d), None)
        if doc is None:
            skipped.append(f"{name}: no reports/<name>/findings.json (run `dvc exp run` or `dvc repro` "
                           f"with the report stage)")
            continue
        found.append(Experiment(name, str(state.get("rev", "")), params, doc, _prepared_hash(data, params)))
    return _without_unchanged_workspace(found), skipped


def _prepared_hash(data: dict, params: dict) -> str | None:
    """The md5 DVC recorded for ``data/prepared/<data.name>`` (the prepare stage's output) in the
    experiment's dvc.lock: the identity of the data itself, whatever params produced it."""
    name = _data_section(params)["name"]
    out = (data.get("outs") or {}).get(str(Layout(str(name)).prepared))
    value = out.get("hash") if isinstance(out, dict) else None
    return str(value) if value else None


def _without_unchanged_workspace(found: list[Experiment]) -> list[Experiment]:
    """Drop the workspace when it holds a commit's results unchanged (after ``dvc repro`` of a
    clean checkout): shown twice, the same run would count twice in "reproduced"."""
    work = next((e for e in found if e.rev == "workspace"), None)
    if work is not None and any(e is not work and e.params == work.params and e.findings == work.findings
                                for e in found):
        found = [e for e in found if e is not work]
    return found


# ------------------------------------------------------------------ draws of the data


def _with_defaults(defaults: dict[str, Any], raw: Any) -> dict[str, Any]:
    """``raw`` over the code's defaults, nested mappings merged: a params.yaml that leaves a
    key out ran with the default, and must not look like another draw for it."""
    out = dict(defaults)
    for key, value in (raw.items() if isinstance(raw, dict) else ()):
        out[key] = (_with_defaults(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict)
                    else value)
    return out


def _data_section(params: dict[str, Any]) -> dict[str, Any]:
    return _with_defaults(asdict(DataConfig()), params.get("data"))


def sample_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params that decide which images and labels an experiment's data are: ``data`` less
    :data:`NOT_THE_SAMPLE`, and the whole ``synthetic`` section when the data are the
    generator's (elsewhere the generator does not run and its seed means nothing)."""
    data = _data_section(params)
    sample: dict[str, Any] = {f"data.{k}": v for k, v in data.items() if k not in NOT_THE_SAMPLE}
    if Path(str(data["root"])) == SYNTHETIC_ROOT:
        sample["synthetic"] = _with_defaults(asdict(SyntheticConfig()), params.get("synthetic"))
    return sample


def draws(experiments: list[Experiment]) -> list[list[Experiment]]:
    """The experiments grouped by the draw of data they ran on, in order of first appearance.

    Two experiments are one draw if their prepared data have the same md5 (the honest identity,
    where dvc.lock gives it) or their :func:`sample_params` are equal (the fallback, and a link
    of its own: the same generator seed is the same draw even if a code change altered the
    bytes). Either link merges, so a draw is never split in two by a missing hash."""
    parent = list(range(len(experiments)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, e in enumerate(experiments):
        keys = [("sample", json.dumps(sample_params(e.params), sort_keys=True, default=str))]
        keys += [("prepared", e.prepared)] if e.prepared else []
        for key in keys:
            a, b = root(i), root(first.setdefault(key, i))
            parent[max(a, b)] = min(a, b)  # the earlier experiment names the group
    groups: dict[int, list[Experiment]] = {}
    for i, e in enumerate(experiments):
        groups.setdefault(root(i), []).append(e)
    return [groups[r] for r in sorted(groups)]


@dataclass(frozen=True)
class DrawOutcome:
    """One finding in one draw: ``reproduced`` only if every experiment of the draw that
    measured it reproduced it; ``split`` when some did and some did not."""

    reproduced: bool
    split: bool


def draw_outcome(members: list[Experiment], key: str) -> DrawOutcome | None:
    """None when no experiment of the draw measured the finding (the draw is not counted)."""
    measured = [v for v in (e.verdict(key) for e in members) if v != NOT_MEASURED]
    if not measured:
        return None
    reproduced = sum(v == REPRODUCED for v in measured)
    return DrawOutcome(reproduced == len(measured), 0 < reproduced < len(measured))


def draw_count(groups: list[list[Experiment]], key: str) -> tuple[int, int, list[int]]:
    """(draws reproducing the finding, draws measuring it, 1-based numbers of split draws)."""
    outcomes = [draw_outcome(g, key) for g in groups]
    measured = [o for o in outcomes if o is not None]
    return (sum(o.reproduced for o in measured), len(measured),
            [i + 1 for i, o in enumerate(outcomes) if o is not None and o.split])


def count_text(k: int, n: int, split: int) -> str:
    """The "reproduced" cell: ``k of n draws``, with how many draws disagreed within."""
    return f"{k} of {n} draw{'' if n == 1 else 's'}" + (f", {split} split" if split else "")


# ------------------------------------------------------------------ the table


def render(experiments: list[Experiment], skipped: list[str], figure: Path | None, snapshot: Path) -> str:
    """The table; ``snapshot`` is where :func:`save` commits what was read (named in the text,
    the same whether the table was built from ``dvc exp show`` or from the snapshot)."""
    groups = draws(experiments)
    number = {id(e): i + 1 for i, g in enumerate(groups) for e in g}
    lines = ["# Findings across experiments", "",
             f"Source: `dvc exp show --json` (each experiment's `reports/<name>/findings.json` and params), "
             f"committed as read in `{snapshot.as_posix()}/<experiment>/`. "
             f"{CELLS} " + ", ".join(f"{s} {v}" for v, s in SYMBOL.items()) + ".", ""]
    if any(e.findings.get("calibration") for e in experiments):
        lines += [("> Runs on the embedded synthetic data are **calibration, not replication**: the generator "
                   "plants only the routes its `synthetic.mechanisms` row lists (none: the negative control). A "
                   "verdict that survives other `synthetic.seed` values is robust to the draw of the data, not "
                   "evidence for the paper; one on a finding nothing planted is a false positive."), ""]
    head = ["finding"] + [f"`{e.name}`" for e in experiments] + ["reproduced"]
    lines += [_row(head), _row(["---"] * len(head))]
    for axis in AXES:
        lines.append(_row([f"*{axis}*"] + [e.axes.get(axis, "") or "-" for e in experiments] + [""]))
    lines.append(_row([f"*{DRAW_ROW}*"] + [str(number[id(e)]) for e in experiments] + [""]))
    splits: list[str] = []
    for claim in CLAIMS:
        cells = []
        for e in experiments:
            f = e.finding(claim.key)
            value = fmt_value(finite_number(f.get("value")), [f.get("ci_lo"), f.get("ci_hi")])
            cell = f"{SYMBOL.get(e.verdict(claim.key), '?')} {value}"
            p_holm = finite_number(f.get("p_holm"))  # absent in reports older than the adjustment
            cells.append(cell if p_holm is None else f"{cell}, p_holm {fmt_p(p_holm)}")
        k, n, split = draw_count(groups, claim.key)
        lines.append(_row([claim.title] + cells + [count_text(k, n, len(split))]))
        splits += [f"- {claim.title}: draw {d} (" + ", ".join(
            f"`{e.name}` {SYMBOL.get(e.verdict(claim.key), '?')}" for e in groups[d - 1]) + ")" for d in split]
    if figure is not None:
        lines += ["", f"![verdicts]({figure.name})"]
    lines += ["", *_draws_section(groups)]
    if splits:
        lines += ["", "Draws whose experiments disagree (counted as not reproduced):", "", *splits]
    if skipped:
        lines += ["", "Not shown (no findings report): " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _draws_section(groups: list[list[Experiment]]) -> list[str]:
    """How the draws were told apart, the counting rule, and what the draws share."""
    lines = ["**Counting.** \"k of n draws\": n draws of the data measured the finding, and in k of them every "
             "experiment that measured it reproduced it. Experiments on one draw (the same prepared data, by the "
             "md5 in their dvc.lock, or the same data params: `data` without "
             + ", ".join(f"`{k}`" for k in NOT_THE_SAMPLE) + ", with the whole `synthetic` section for the "
             "generator's data) are one draw, not several reproductions; a draw whose experiments disagree "
             "(\"split\") counts as not reproduced. The draws:", ""]
    # A list, not a table: benchmarks/readme_numbers.py copies every table row of compare.md.
    samples = [_flat(sample_params(g[0].params)) for g in groups]
    differ = [k for k in dict.fromkeys(k for s in samples for k in s) if len({str(s.get(k)) for s in samples}) > 1]
    for i, (g, s) in enumerate(zip(groups, samples)):
        hashes = list(dict.fromkeys(e.prepared for e in g if e.prepared))
        lines.append(f"- draw {i + 1}: " + ", ".join(f"`{e.name}`" for e in g)
                     + f"; prepared data {', '.join(f'`{h}`' for h in hashes) or 'not in dvc.lock'}"
                     + "".join(f"; {k} {s.get(k)}" for k in differ))
    seed_of = [s.get("synthetic.seed") for s in samples]
    shared = sorted({str(v) for v in seed_of if v is not None and seed_of.count(v) > 1})
    if shared:
        lines += ["", f"Draws with the same `synthetic.seed` ({', '.join(shared)}) differ in other params "
                  "only: their samples come from the generator's same random stream, so they are not independent."]
    seeds = {json.dumps(e.params.get("seeds"), default=str) for g in groups for e in g}
    if len(groups) > 1 and len(seeds) == 1:
        shown = ", ".join(map(str, groups[0][0].params.get("seeds") or []))
        lines += ["", f"Every draw trains the same `seeds` ({shown}). That does not make the draws dependent: a seed "
                  "fixes a training's initialization and batch order, and on other data it is another training. "
                  "They count as independent draws of the data."]
    return lines


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def plot(experiments: list[Experiment], path: Path) -> None:
    """Findings x experiments, each cell coloured by verdict and labelled with the value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    number = {id(e): i + 1 for i, g in enumerate(draws(experiments)) for e in g}
    rows, cols = len(CLAIMS), len(experiments)
    # At least 6 in wide: one or two columns left no room for the findings' titles and the legend.
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 + 1.4 * cols), 0.45 * rows + 1.6))
    grid = [[to_rgb(COLOR[NOT_MEASURED])] * cols for _ in range(rows)]
    for j, e in enumerate(experiments):
        for i, claim in enumerate(CLAIMS):
            grid[i][j] = to_rgb(COLOR.get(e.verdict(claim.key), COLOR[NOT_MEASURED]))
            value = finite_number(e.finding(claim.key).get("value"))
            if value is not None:
                ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7)
    ax.imshow(grid, aspect="auto")
    ax.set_yticks(range(rows), [c.title for c in CLAIMS], fontsize=7)
    labels = [f"{e.name} (draw {number[id(e)]})\n" + " ".join(v for k, v in e.axes.items() if v and k != "seeds")
              for e in experiments]
    ax.set_xticks(range(cols), labels, fontsize=7, rotation=30, ha="right")
    ax.legend(handles=[Patch(color=c, label=v) for v, c in COLOR.items()], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title("Findings of the paper across experiments", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


# ------------------------------------------------------------------ the committed snapshot


def save(experiments: list[Experiment], skipped: list[str], folder: Path) -> None:
    """Write what was read: ``<folder>/<experiment>/findings.json`` and ``params.yaml`` each, and
    :data:`INDEX` (order, commit, prepared-data hash, the experiments without a report). The
    folder is replaced whole, so an experiment no longer read leaves no stale copy behind."""
    if (folder / FINDINGS).exists() or (folder / "findings.md").exists():
        raise CxrpruneError(f"{folder} holds a findings report (a dataset named `{folder.name}`?); "
                            f"cxrprune compare keeps its snapshot there: rename the dataset (data.name)")
    taken = {INDEX}
    entries = []
    with atomic_dir(folder) as tmp:
        for e in experiments:
            sub = _folder_name(e.name, taken)
            write_json(tmp / sub / FINDINGS, e.findings)
            write_text(tmp / sub / PARAMS, yaml.safe_dump(e.params, sort_keys=False, allow_unicode=True))
            entries.append({"name": e.name, "folder": sub, "rev": e.rev, "prepared": e.prepared})
        write_json(tmp / INDEX, {"experiments": entries, "skipped": skipped})


def _folder_name(name: str, taken: set[str]) -> str:
    """A folder name for an experiment name (branch names hold '/'), unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "experiment"
    sub, n = base, 1
    while sub in taken:
        n += 1
        sub = f"{base}-{n}"
    taken.add(sub)
    return sub


def load(folder: Path) -> tuple[list[Experiment], list[str]]:
    """The experiments of a snapshot written by :func:`save`, or of a hand-made folder of
    ``<experiment>/findings.json`` + ``params.yaml`` (no :data:`INDEX`: folders in name order,
    no prepared-data hashes, so draws are told apart by their params)."""
    if not folder.is_dir():
        raise CxrpruneError(f"{folder}: not a folder; pass the folder `cxrprune compare` wrote (reports/compare)")
    subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    index_path = folder / INDEX
    if index_path.exists():
        entries, skipped = _read_index(index_path)
        unlisted = sorted(set(subs) - {str(x["folder"]) for x in entries})
        if unlisted:
            raise CxrpruneError(f"{index_path}: does not list the folder(s) {unlisted}; add them to its "
                                "experiments or remove them")
    else:
        entries, skipped = [{"name": s, "folder": s, "rev": "", "prepared": None} for s in subs], []
    if not entries:
        raise CxrpruneError(f"{folder}: no experiment folders (<experiment>/{FINDINGS} and {PARAMS})")
    experiments = []
    for x in entries:
        sub = folder / str(x["folder"])
        findings = _read_findings(sub / FINDINGS)
        experiments.append(Experiment(str(x["name"]), str(x.get("rev") or ""), _read_params(sub / PARAMS), findings,
                                      x.get("prepared") or None))
    return experiments, skipped


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CxrpruneError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CxrpruneError(f"{path}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise CxrpruneError(f"{path}: not valid JSON ({exc})") from None


def _read_index(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    doc = _read_json(path)
    entries = doc.get("experiments") if isinstance(doc, dict) else None
    ok = isinstance(entries, list) and all(
        isinstance(x, dict) and isinstance(x.get("name"), str) and isinstance(x.get("folder"), str)
        and re.fullmatch(r"[A-Za-z0-9._-]+", x["folder"]) and x["folder"] not in (".", "..")
        and isinstance(x.get("rev", ""), str) and isinstance(x.get("prepared"), (str, type(None)))
        for x in entries)
    skipped = doc.get("skipped", []) if isinstance(doc, dict) else None
    if not ok or not isinstance(skipped, list):
        raise CxrpruneError(f"{path}: expected {{\"experiments\": [{{\"name\", \"folder\", \"rev\", \"prepared\"}}, "
                            "...], \"skipped\": [...]}} with folder names of letters, digits, '.', '_', '-'")
    return entries, [str(s) for s in skipped]


def _read_findings(path: Path) -> dict[str, Any]:
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), dict):
        raise CxrpruneError(f"{path}: not a findings report (no `findings` mapping; the report stage writes one)")
    return doc


def _read_params(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CxrpruneError(f"{path}: not found; every experiment folder needs the params it ran with") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CxrpruneError(f"{path}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise CxrpruneError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CxrpruneError(f"{path}: not a mapping of params (got a {type(raw).__name__})")
    return raw
