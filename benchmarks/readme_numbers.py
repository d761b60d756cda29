"""The numbers in the READMEs, rendered from the committed outputs that hold them.

Every result or benchmark figure in ``README.md``, ``benchmarks/README.md`` and
``docs/SCALEOUT.md`` sits between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->``
and is produced here from ``metrics/synthetic/*``, ``plots/synthetic/*`` (the default
pipeline's committed outputs) and ``benchmarks/results/*.json`` (the benchmarks' committed
outputs); nothing is typed by hand (the paper's published values, quoted beside ours, are
the only literals). After regenerating outputs::

    python benchmarks/readme_numbers.py --write   # refresh the blocks in place
    python benchmarks/readme_numbers.py --check   # exit 1 naming every stale block
    python benchmarks/readme_numbers.py           # print the rendered blocks

tests/test_readme_numbers.py fails when a block differs from what the outputs say. Plain
Python + pandas, except the operating-point table, which is rendered by
``cxrprune.analysis.readme`` (the one home of that table's format).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "benchmarks/README.md", "docs/SCALEOUT.md")
BLOCK = re.compile(r"(<!-- numbers:([\w-]+) -->\n)(.*?)(<!-- /numbers:\2 -->)", re.DOTALL)
LIMIT = "ours' settings (limit)"  # bench_prune_predict's name for the pure forward limit
AIR = ("Emphysema", "Subcutaneous Emphysema", "Pneumothorax", "Pneumomediastinum")


class Outputs:
    """Reads the committed outputs under ``root`` (the repository, or a copy in a test)."""

    def __init__(self, root: Path = ROOT):
        self.root = Path(root)

    def json(self, rel: str) -> dict:
        return json.loads((self.root / rel).read_text())

    def csv(self, rel: str) -> pd.DataFrame:
        return pd.read_csv(self.root / rel)

    def json_params_weight(self) -> str:
        """``pie_treatment.weight`` of the committed params.yaml (the weight the study ran with)."""
        import yaml

        return f"{yaml.safe_load((self.root / 'params.yaml').read_text())['pie_treatment']['weight']:g}"

    def bench(self, name: str) -> dict | None:
        path = self.root / "benchmarks" / "results" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------ formatting helpers

def p_(p: float) -> str:
    """A p-value as the README writes it: 2 significant digits, scientific below 0.001."""
    return f"{p:.0e}".replace("e-0", "e-") if p < 1e-3 else f"{p:.2g}"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def ratio(x: float) -> str:
    return f"{x:.3g}x" if x >= 10 else f"{x:.2g}x" if x < 1 else f"{x:.3g}x"


# --------------------------------------------------------------------- result blocks

def findings(o: Outputs) -> str:
    """The report's findings table from ``reports/synthetic/findings.json`` alone (and the
    committed planted-effect rates, ``benchmarks/results/verdicts.json``): value
    [95% CI], p, Holm p, verdict and FPR / power formatted as ``findings.md`` formats them
    (``cxrprune.analysis.report``); each claim's title, published value and statistic are the
    constants of ``cxrprune.analysis.findings``, nothing else is written here."""
    from cxrprune.analysis.findings import CLAIMS, NOT_MEASURED
    from cxrprune.analysis.report import fmt_p, fmt_value, validation_cell

    doc = o.json("reports/synthetic/findings.json")
    validation = o.bench("verdicts")  # the planted-effect rates the report prints beside each verdict
    rows = ["| finding | paper | this run: statistic | value [95% CI] | p | p (Holm) | verdict | FPR / power (planted) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for claim in CLAIMS:
        f = doc["findings"].get(claim.key, {})  # dvc exp show style: a null metric may be absent
        cells = [claim.title, claim.paper, claim.statistic, fmt_value(f.get("value"), [f.get("ci_lo"), f.get("ci_hi")]),
                 fmt_p(f.get("p")), fmt_p(f.get("p_holm")), f"**{f.get('verdict', NOT_MEASURED)}**",
                 validation_cell(validation, claim.key)]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    family = doc["multiplicity"]
    return "\n".join(rows) + (f"\n\nHolm-adjusted over the {family['m']} findings with a p-value "
                              f"(family-wise error {doc['alpha']:g}); the verdicts use the adjusted p.\n")


def air_density_loss(o: Outputs) -> str:
    cur = o.csv("plots/synthetic/forgettability_curves.csv")
    at90 = cur[(cur["level"].round(2) == 0.90) & cur["class_name"].isin(AIR)]["rel_dap"]
    lo, hi = sorted((-100 * at90).round().astype(int))[::len(at90) - 1]
    return f"lose {lo}-{hi}% of their AP by 90% sparsity"


def why(o: Outputs) -> str:
    """What the synthetic truth and the simulated readers say about the PIEs, with the
    verdicts of ``findings.json``; every number from the outputs, no prose that depends on them."""
    from cxrprune.analysis.findings import CLAIMS

    s = o.json("metrics/synthetic/summary.json")
    pie = s["pie"]
    found = o.json("reports/synthetic/findings.json")["findings"]
    title = {c.key: c.title for c in CLAIMS}

    def verdict(key: str) -> str:
        return f"{title[key]}: **{found[key]['verdict']}**"

    reader = o.json("metrics/synthetic/reader.json")
    r = reader["pooled"]
    enr = o.csv("plots/synthetic/pie_class_ratios.csv").set_index("class_name")["enrichment"]
    flipped = round(pie["frac_flipped_pie"] * pie["count"])
    air = ", ".join(f"{c} {enr[c]:+.2f}" for c in AIR)
    return (
        f"The synthetic truth ({verdict('pie_label_noise')}; {verdict('pie_low_quality')}): "
        f"{flipped} of {pie['count']} PIEs {'has' if flipped == 1 else 'have'} a flipped\nlabel, against "
        f"{100 * pie['frac_flipped_nonpie']:.1f}% of the other images (one-sided Fisher p {p_(pie['flipped_p'])}); "
        f"{pct(pie['frac_degraded_pie'])} of the PIEs are degraded, against\n{pct(pie['frac_degraded_nonpie'])} of the "
        f"other images; mean quality {pie['mean_quality_pie']:.2f} vs {pie['mean_quality_nonpie']:.2f} "
        f"(one-sided Mann-Whitney p {p_(pie['quality_p'])}).\n"
        f"The air-density findings ({', '.join(AIR)})\n{air_density_loss(o)}; their smoothed PIE enrichment "
        f"(ln of observed over expected PIE positives, 0.5 added to both) is {air}.\n"
        f"The simulated reader study ({reader['n_readers']} readers, {r['agree']['n_images_pie']} PIE and "
        f"{r['agree']['n_images_non_pie']} other images; {r['agree']['test']}), per-image means, PIE vs other "
        f"images:\n" + ",\n".join(
            f"{what} {r[q]['pie_image_mean']:.2f} vs {r[q]['non_pie_image_mean']:.2f} (p {p_(r[q]['p'])}; {verdict(key)})"
            for what, q, key in (("agreement with the label", "agree", "reader_label_noise"),
                                 ("quality", "quality", "reader_quality"),
                                 ("difficulty", "difficulty", "reader_difficulty"))) + ".\n")


# ------------------------------------------------------------------ benchmark blocks

def _machine(b: dict) -> str:
    m = b["machine"]
    return (f"{m['cpu_model']}, {m['nproc']} cores, torch {m['torch']} ({m['torch_threads']} thread"
            f"{'s' * (m['torch_threads'] != 1)}), CPU share {m['cpu_share']:.2f}, {m['started_utc']}")


def rounds(n: int) -> str:
    return "1 round (not repeated, so not alternated)" if n == 1 else f"{n} alternated rounds"


def bench_rows(o: Outputs) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, baseline, ours, ratio, run) for every benchmark; a missing output says so."""
    rows = []
    pp = o.bench("bench_prune_predict")
    if pp:
        f = pp["figures"]
        for b, x in sorted(f["batch"].items(), key=lambda kv: int(kv[0])):
            rows.append((
                (f"prune + predict per seed, {f['arch']} {f['image_size']} px from 1024 px PNGs, batch {b}: "
                f"measured on {x['images_per_level']} images/level (level{'s' * (len(f['levels']) > 1)} "
                f"{', '.join(f'{k:g}' for k in f['levels'])}, {f['rounds']} interleaved rounds), **extrapolated** "
                f"to {f['full_n']:,} images x 20 levels (`bench_prune_predict.py`)"),
                (f"authors' approach {x['base_ms_per_image']:.0f} ms/image + {f['fixed_base_s']:.0f} s fixed "
                f"-> {x['base_full_h']:.2f} h"),
                f"{x['ours_ms_per_image']:.0f} ms/image + {f['fixed_ours_s']:.1f} s fixed -> {x['ours_full_h']:.2f} h",
                (f"**{x['ratio_full']:.2f}x** (at {x['images_per_level']} images: {x['ratio_at_measured_size']:.2f}x); "
                f"max \\|Δp\\| {f['max_abs_prob_diff']:.1e}"),
                _machine(pp)))
        for b, x in sorted(f.get("forward", {}).items(), key=lambda kv: int(kv[0])):
            fw = x["ms_per_image"]
            rows.append((
                (f"forward alone, {f['arch']} {f['image_size']} px, batch {b}, {x['images']} images in memory, same "
                "pruned model: hooks on vs after `prune.remove` (NCHW); channels-last; ours' settings (the pure "
                "forward limit)"),
                f"hooked {fw['hooked NCHW']:.0f} ms/image",
                (f"removed {fw['removed NCHW']:.0f}, channels-last {fw['removed channels-last']:.0f}, "
                f"limit {fw[LIMIT]:.0f} ms/image"),
                f"hooks cost **{x['hooks_over_removed']:.2f}x**",
                _machine(pp)))
    else:
        rows.append(("prune + predict (`bench_prune_predict.py`)", "", "", "no committed output", ""))
    low = o.bench("bench_prune_predict-batch256-96px")
    if low:
        f = low["figures"]
        x = f["batch"]["256"]
        rows.append((
            (f"same at the authors' batch 256, but at {f['image_size']} px (the machine allowed no 256 px run at "
            f"batch 256): {x['images_per_level']} images/level, extrapolated to {f['full_n']:,}"),
            f"{x['base_ms_per_image']:.0f} ms/image -> {x['base_full_h']:.2f} h",
            f"{x['ours_ms_per_image']:.0f} ms/image -> {x['ours_full_h']:.2f} h",
            f"**{x['ratio_full']:.2f}x** (at {x['images_per_level']} images: {x['ratio_at_measured_size']:.2f}x)",
            _machine(low)))
    ev = o.bench("bench_evaluate")
    if ev:
        f = ev["figures"]
        rows.append((
            (f"evaluation: per-class AP, {f['blocks']} (seed, level) blocks x {f['classes']} classes x "
            f"{f['images']:,} images (`bench_evaluate.py`)"),
            f"loop over `sklearn.metrics.average_precision_score` {f['sklearn_s']:.1f} s",
            f"{f['ours_1thread_s']:.2f} s (AP + AUROC + F1, 1 thread)",
            f"**{f['speedup_1thread']:.1f}x**; max \\|ΔAP\\| {f['max_ap_diff']:.1e}",
            _machine(ev)))
    else:
        rows.append(("evaluation (`bench_evaluate.py`)", "", "", "no committed output", ""))
    ma = o.bench("bench_masks")
    if ma:
        f = ma["figures"]
        rows.append((
            "masks for all 20 levels of a ResNet50 (`bench_masks.py`)",
            f"`global_unstructured` per level {f['baseline_s']:.1f} s, {f['baseline_peak_extra_gb']:.2f} GB extra",
            f"{f['ours_s']:.2f} s, {f['ours_peak_extra_gb']:.3f} GB extra",
            f"**{f['speedup']:.0f}x** time; {f.get('mask_positions_differing', 'unchecked')} mask positions differ",
            _machine(ma)))
    else:
        rows.append(("masks (`bench_masks.py`)", "", "", "no committed output (not rerun in this revision)", ""))
    ti = o.bench("bench_train_input")
    if ti:
        f = ti["figures"]
        rows.append((
            f"training input, {f['arch']} {f['image_size']} px, batch {f['batch_size']} (`bench_train_input.py`)",
            f"model's own step on in-memory tensors {f['ref_same_img_s']:.3g} img/s",
            f"full loop from the uint8 cache {f['ours_img_s']:.3g} img/s",
            f"**{f['ours_over_ref_same']:.2f}**", _machine(ti)))
    else:
        rows.append(("training input (`bench_train_input.py`)", "", "", ("no committed output (not rerun in this "
                     "revision)"), ""))
    ray = o.bench("bench_ray")
    if ray:
        f = ray["figures"]
        rows.append((
            (f"`cxrprune repro --ray` vs one `dvc repro`, {f['seeds']} seeds, tiny config, train.threads "
            f"{f['threads_per_stage']} on both sides, {rounds(f['repeats'])} (`bench_ray.py`)"),
            f"{f['sequential_median_s']:.1f} s", f"{f['ray_median_s']:.1f} s", f"**{f['ratio']:.2f}x**",
            _machine(ray)))
    else:
        rows.append(("`cxrprune repro --ray` (`bench_ray.py`)", "", "", "no committed output", ""))
    return rows


def bench_table(o: Outputs) -> str:
    lines = ["| benchmark | baseline | ours | ratio | run (CPU, threads, CPU share, start) |",
             "| --- | --- | --- | --- | --- |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in bench_rows(o)]) + "\n"


def scaleout(o: Outputs) -> str:
    ray = o.bench("bench_ray")
    if not ray:
        return "No committed output of `benchmarks/bench_ray.py` yet.\n"
    f = ray["figures"]
    pr = f["projection"]
    ks = [k for k in (2, 4, 8) if f"N30_k{k}" in pr]
    return (f"Measured ({_machine(ray)}; `python benchmarks/bench_ray.py`, tiny config, {f['seeds']} seeds,\n"
            f"train.threads {f['threads_per_stage']} on both sides, {rounds(f['repeats'])}): one sequential "
            f"`dvc repro` {f['sequential_median_s']:.1f} s vs\n`cxrprune repro --ray` {f['ray_median_s']:.1f} s "
            f"({f['ratio']:.2f}x, medians). With N seeds, k parallel workers (GPUs), per-seed time t_seed,\n"
            "Ray start T_start and the stages after the seeds T_rest:\n\n"
            "    T(k) = T_start + ceil(N/k) * t_seed + T_rest,    speed-up S(k) = (N * t_seed + T_rest) / T(k)\n\n"
            f"e.g. N = 30 with Ray's measured t_seed = {f['t_seed_s']:.1f} s, T_start = {f['t_start_s']:.1f} s, "
            f"T_rest = {f['t_rest_s']:.1f} s:\n"
            + ", ".join(f"k={k} {pr[f'N30_k{k}']['seconds']:.0f} s ({pr[f'N30_k{k}']['speedup']:.2f}x)" for k in ks)
            + ". For GPU figures put one GPU's\nper-seed time into t_seed" + _gpu_seed_time(o) + ".\n")


def _gpu_seed_time(o: Outputs) -> str:
    """One H200's training + pruning time per seed of the default (bench_gpu.json), if measured."""
    b = o.bench("bench_gpu")
    if b is None:
        return ""
    seeds = b["figures"]["per_seed"]
    per_seed = sorted(r["train_s"] + r["prune_s"] for r in seeds)
    return (f" (the default's train + prune work took {per_seed[0]:.0f}-{per_seed[-1]:.0f} s per seed on one "
            f"{b['machine']['gpu']}, `benchmarks/results/bench_gpu.json`: the work alone, without the two stage "
            "processes' start-up)")


def train_speed(o: Outputs) -> str:
    """Time to today's validation mAP and images/s (benchmarks/bench_train_speed.py), one
    paragraph per committed run (the default data, and the default data at 48 px)."""
    runs = sorted((o.root / "benchmarks" / "results").glob("bench_train_speed*.json"))
    out, compiled = [], []
    for path in runs:
        b = json.loads(path.read_text())
        f, m = b["figures"], b["machine"]
        if "sides" not in f:
            if any(r["compile"] for r in f.get("throughput", [])):
                compiled.append(_compile_line(path.relative_to(o.root), f, m))
            continue
        rows = {(r["seed"], r["side"]): r for r in f["sides"]}
        seeds = sorted({r["seed"] for r in f["sides"]})
        # --candidate specs, in order, from the command line the record kept ("candidate 1", ...)
        argv = m.get("argv") or []
        specs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--candidate"]
        labels = {"new": "the new default", **{f"candidate {i + 1}": f"the new default with {spec}"
                                               for i, spec in enumerate(specs)}}
        parts = []
        for seed in seeds:
            t = rows[(seed, "today")]
            sides = []
            for side, label in labels.items():
                n = rows.get((seed, side))
                if n is None:
                    continue
                reach = (f"reached it in {n['reached_s']:.0f} s (epoch {n['reached_epoch'] + 1}), "
                         f"**{n['reached_s'] / t['reached_s']:.2f}x** today's time" if n["reached_s"] is not None
                         else f"did not reach it (kept val mAP {n['kept_val_map']:.3f})")
                sides.append(f"{label} {reach}, finishing in {n['total_s']:.0f} s")
            parts.append(f"seed {seed}: today's loop kept val mAP {t['kept_val_map']:.3f} after {t['reached_s']:.0f} s "
                         f"(epoch {t['reached_epoch'] + 1}, finishing in {t['total_s']:.0f} s); " + "; ".join(sides))
        new = ", ".join(f"{k} {v}" for k, v in f["new"].items() if f["today"].get(k) != v)
        thr = ""
        if f.get("throughput"):
            best = {(r["precision"], r["batch"], r["fused_adam"]): r for r in f["throughput"] if not r["compile"]}
            thr = " Images/s of the loop relative to fp32/128: " + ", ".join(
                f"{p}/{bs}{' fused' if fu else ''} {r['relative']:.2f}x" for (p, bs, fu), r in best.items()) + "."
        r50 = f.get("resnet50_256px") or {}
        if r50:
            thr += (" ResNet50 at 256 px (the paper's model), images/s: "
                    + ", ".join(f"{p} {v:.1f}" for p, v in r50.items())
                    + (f" ({r50['bf16'] / r50['fp32']:.2f}x in bf16)." if "bf16" in r50 and "fp32" in r50 else "."))
        out.append(f"- **{f['image_size']} px{_train_images(path)}** (`{path.relative_to(o.root)}`; {m['cpu_model']}, {m['nproc']} cores, "
                   f"CPU share {m['cpu_share']:.2f}, {m['started_utc']}); new default = today's loop with {new}: "
                   + "; ".join(parts) + "." + thr)
    out += compiled
    if not out:
        return "No committed output of `benchmarks/bench_train_speed.py` yet.\n"
    return "\n".join(out) + "\n"


def _train_images(json_path: Path) -> str:
    """", N training images" from the run's printed part-2 header (its .txt beside the .json):
    runs on differently sized data are then told apart."""
    txt = json_path.with_suffix(".txt")
    hit = re.search(r"\(\d+ px, (\d+) train / \d+ val images\)", txt.read_text()) if txt.exists() else None
    return f", {int(hit.group(1)):,} training images" if hit else ""


def _compile_line(path: Path, f: dict, m: dict) -> str:
    """A throughput run with ``--compile``: each compiled row next to the same setting eager,
    and what compiling cost (the first epoch, which compiles, from an empty cache)."""
    eager = {(r["precision"], r["batch"], r["fused_adam"]): r for r in f["throughput"] if not r["compile"]}
    parts = []
    for r in (r for r in f["throughput"] if r["compile"]):
        e = eager.get((r["precision"], r["batch"], r["fused_adam"]))
        if e is None:
            continue
        parts.append(f"{r['precision']}/{r['batch']}{' fused' if r['fused_adam'] else ''} "
                     f"{r['images_per_s'] / e['images_per_s']:.2f}x of eager, first epoch (compiling) "
                     f"{r['first_epoch_s']:.0f} s vs {e['first_epoch_s']:.1f} s")
    return (f"- **{f['image_size']} px, `torch.compile`** (`{path}`; {m['cpu_model']}, {m['nproc']} cores, "
            f"CPU share {m['cpu_share']:.2f}, {m['started_utc']}): " + "; ".join(parts) + ".")


def conv_grad(o: Outputs) -> str:
    """``train.conv_weight_grad`` from ``benchmarks/results/bench_conv_grad.json``: the whole
    training step both ways, and each convolution's weight gradient both ways."""
    b = o.bench("bench_conv_grad")
    if b is None:
        return "**Not measured yet**: run `python benchmarks/bench_conv_grad.py`.\n"
    f = b["figures"]
    layers = "; ".join(f"{r['conv']} ({r['output_pixels']} output px): {r['onednn_ms']:.1f} vs {r['gemm_ms']:.1f} ms"
                       for r in f["layers"])
    return (f"`benchmarks/results/bench_conv_grad.json` ({_machine(b)}): a training step of {f['arch']} at "
            f"{f['image_size']} px, batch {f['batch_size']}, took {f['native_ms_per_step']:.0f} ms native and "
            f"{f['gemm_ms_per_step']:.0f} ms with gemm (**{f['native_over_gemm']:.2f}x**). The weight gradient per "
            f"convolution, oneDNN vs gemm: {layers}.\n")


# The paper's NIH-CXR-LT training run (the published recipe, ../STUDY.md of the project's
# sources): about 78,506 training images, up to 60 epochs. Quoted, not measured.
PAPER_TRAIN_IMAGES = 78_506
PAPER_EPOCHS = 60


def gpu(o: Outputs) -> str:
    """The GPU paths measured on a CUDA device (benchmarks/bench_gpu.py and
    bench_train_speed.py --tag gpu, both run by benchmarks/gpu_run.sh): the default study's
    per-seed work, reproducibility, and the paper's model's training throughput."""
    b, t = o.bench("bench_gpu"), o.bench("bench_train_speed-gpu")
    if b is None or t is None:
        return "**Not measured yet**: run `bash benchmarks/gpu_run.sh` on a machine with a CUDA device.\n"
    f, m = b["figures"], b["machine"]
    seeds = f["per_seed"]
    maps = ", ".join(f"{r['dense_test_map']:.3f} ({r['committed_cpu_dense_test_map']:.3f})" for r in seeds)
    ref = f.get("cpu_reference")
    cpu = (f" The committed CPU run of the same stages (`{ref['file']}`, {ref['cpu_model']}): train "
           f"{ref['train_s']:.0f} s, prune {ref['prune_s']:.0f} s (stage processes, start-up included)." if ref else "")
    rep = f["reproducibility"]
    r50rep = f["reproducibility_resnet50"]

    def same(r: dict) -> str:
        return f"{r['tensors_differing']} of {r['tensors']} tensors differed"

    tf = t["figures"]
    r50, auto = tf["resnet50_256px"], tf.get("resnet50_256px_autotuned", {})
    rates = "; ".join(f"{p} {v:,.0f} deterministic, {auto[p]:,.0f} autotuned" if p in auto else f"{p} {v:,.0f}"
                      for p, v in r50.items())
    best = r50.get(f["precision"], max(r50.values()))
    paper_min = PAPER_EPOCHS * PAPER_TRAIN_IMAGES / best / 60
    return (f"Measured on one {m['gpu']} (`benchmarks/results/bench_gpu.json`, {m['started_utc']}; torch "
            f"{m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}: the GPU machine's own torch, not the pinned one; "
            f"host {m['cpu_model']}, {m['nproc']} cores). The default study's GPU work, `train.precision` auto = "
            f"{f['precision']}: training all {len(seeds)} seeds took **{f['gpu_train_s']:.0f} s** and pruning and "
            f"predicting every method and level **{f['gpu_prune_s']:.0f} s** (the first seed's efficiency timing "
            f"included).{cpu} Dense test mAP per seed on the GPU (the committed CPU run's in brackets): {maps}; "
            f"another precision and summation order give other models, as another seed does. "
            f"Reproducibility: seed {m['args']['repeat_seed']} trained twice with `train.deterministic: true`: "
            f"{same(rep['deterministic'])}; twice autotuned: {same(rep['autotuned'])}. One epoch of ResNet50 at 256 px "
            f"twice: {same(r50rep['deterministic'])} deterministic, {same(r50rep['autotuned'])} autotuned. "
            f"ResNet50 at 256 px, training images/s (`benchmarks/results/bench_train_speed-gpu.json`, batch 128): "
            f"{rates}. At that rate one training of the paper's recipe ({PAPER_EPOCHS} epochs over "
            f"{PAPER_TRAIN_IMAGES:,} images, validation and data loading not counted) is about "
            f"**{paper_min:.0f} min** of GPU time in {f['precision']}.\n")


def pie_answer(o: Outputs) -> str:
    """The PIE treatment study's answer on the default data, from metrics/synthetic/pie_treatment.json."""
    path = o.root / "metrics/synthetic/pie_treatment.json"
    if not path.exists():
        return ("**Not run yet**: `metrics/synthetic/pie_treatment.json` is not committed; run "
                "`dvc repro studies/pie-treatment/dvc.yaml` and `make readme-numbers`.\n")
    d = json.loads(path.read_text())
    tp = d["train_pies"]
    truth = tp.get("truth", {})

    def cmp(t: str, ref: str, key: str) -> str:
        r = d[f"vs_{ref}"][t][key]
        return (f"{r['mean_diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p {p_(r['p'])}"
                if r.get("mean_diff") is not None and r.get("ci_low") is not None else "n/a")

    verdicts = d.get("verdicts", {})

    def verdict(t: str) -> str:
        v = verdicts.get(t)
        if v is None:
            return "has no verdict recorded (rerun `dvc repro studies/pie-treatment/dvc.yaml`)"
        adjusted = [x["p_holm"] for x in v["tests"] if x["p_holm"] is not None]
        smallest = f"; smallest Holm-adjusted p of the {len(v['tests'])} tests {p_(min(adjusted))}" if adjusted else ""
        return f"**{v['verdict']}**{smallest}"

    def calibration() -> str:
        c = verdicts.get("remove", {}).get("calibration", {})
        if c.get("false_positive_rate") is None:
            return ""
        power = c["power_hurts_at_mde"]
        mde = d["vs_baseline"]["remove"]
        return (f" At these seeds the rule calls a treatment that changes nothing 'helps' or 'hurts' "
                f"{c['false_positive_rate']:.1%} of the time, and finds a loss the size of one test's MDE "
                f"(dense mAP {mde['map']['mde']:.3f}, rare-class AP {mde['rare_ap']['mde']:.3f}) "
                f"{power['map']:.0%} and {power['rare_ap']:.0%} of the time ({c['simulations']:,} simulated "
                "normal seed outcomes with the observed spread, not effects planted in images); "
                f"calling it on any single test at p < 0.05 would have said 'helps' or 'hurts' "
                f"{c['unadjusted_false_positive_rate']:.1%} of the time.")

    flips = truth.get("flipped", {})
    degr = truth.get("degraded", {})
    what = (f"Training-set PIEs ({tp['count']} images, out of fold) hold flipped labels at precision "
            f"{flips.get('precision', float('nan')):.3f} (base rate {flips.get('base_rate', float('nan')):.3f}, "
            f"Fisher p {p_(flips['p'])}) and degraded images at {degr.get('precision', float('nan')):.3f} "
            f"(base rate {degr.get('base_rate', float('nan')):.3f}, p {p_(degr['p'])})" if flips and degr
            else f"{tp['count']} training-set PIEs (no synthetic truth to check them against)")
    sentences = [
        f"{what}; removing them {verdict('remove')} (dense mAP vs the baseline {cmp('remove', 'baseline', 'map')}, "
        f"vs dropping as many random images {cmp('remove', 'remove_random', 'map')}; rare-class AP vs the baseline "
        f"{cmp('remove', 'baseline', 'rare_ap')}, vs the random control {cmp('remove', 'remove_random', 'rare_ap')}).",
        f"Upweighting them x{o.json_params_weight()} {verdict('upweight')} (dense mAP vs the baseline "
        f"{cmp('upweight', 'baseline', 'map')}, vs the random control {cmp('upweight', 'remove_random', 'map')}; "
        f"rare-class AP vs the baseline {cmp('upweight', 'baseline', 'rare_ap')}, vs the random control "
        f"{cmp('upweight', 'remove_random', 'rare_ap')}).",
        f"Mean differences over {d['vs_baseline']['remove']['map']['n']} seeds with 95% t intervals and raw paired "
        "t-test p-values; each verdict reads its treatment's tests together, Holm-adjusted "
        "(`metrics/synthetic/pie_treatment.json`)." + calibration(),
    ]
    return "\n".join(sentences) + "\n"


def intervention_answer(o: Outputs) -> str:
    """The frequency intervention study's answer on the default data, from
    metrics/synthetic/frequency_intervention.json."""
    path = o.root / "metrics/synthetic/frequency_intervention.json"
    if not path.exists():
        return ("**Not run yet**: `metrics/synthetic/frequency_intervention.json` is not committed; run "
                "`dvc repro studies/frequency-intervention/dvc.yaml` and `make readme-numbers`.\n")
    d = json.loads(path.read_text())

    def test(key: str) -> str:
        r = d[key]
        if r.get("p") is None:
            return f"not testable ({r['n']} classes)"
        return f"{r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p {p_(r['p'])}, {r['n']} classes"

    def shown(key: str) -> bool:
        return d[key].get("p") is not None and d[key]["p"] <= 0.05

    def edge(key: str) -> str:
        """Where the sign-flip test and the t interval disagree, say so: the result is at the edge."""
        r = d[key]
        if r.get("p") is None or r.get("ci_low") is None:
            return ""
        if shown(key) == (r["ci_low"] <= 0.0 <= r["ci_high"]):
            return " (the t interval and the sign-flip test disagree: at the edge of significance)"
        return ""

    cal = d.get("calibration", {})
    power = ", ".join(f"{v:.0%} at a loss of {k}" for k, v in cal.get("power", {}).items())
    left = "; ".join(f"{x['class']} ({x['reason']})" for x in d["left_out"]) or "none"
    control = ("hiding the other half's positives also changed a common class's retained AUROC (common arm "
               "minus control: {}): masking itself matters, and the rare-vs-common contrast cancels it only as far "
               "as each arm hides half of the classes" if shown("masking_control") else
               "hiding the other half's positives changed nothing detectable for a common class (common arm minus "
               "control: {})").format(test("masking_control"))
    lines = [
        f"With {d['seeds']} seed{'s' if d['seeds'] != 1 else ''} per arm and {d['keep']:g} of a class's training positives kept in its rare arm: "
        f"**{d['verdict']}** (retained AUROC, mean over the levels, rare arm minus common arm: {test('frequency')}; "
        f"sign-flip test over classes, 95% t interval){edge('frequency')}.",
        f"The intervention took effect (dense AUROC rare minus common: {test('manipulation')}); {control}; first "
        f"drop rare minus common: {test('first_drop')}.",
        f"Classes left out: {left}.",
    ]
    if cal.get("false_positive_rate") is not None:
        lines.append(f"On the study's own between-arm noise (the masking-control differences, {cal['classes']} classes, "
                     f"{cal['replicates']} replicates per planted loss) the verdict says \"rare forgotten more\" "
                     f"{cal['false_positive_rate']:.1%} of the time when nothing is planted, and {power} "
                     "(`metrics/synthetic/frequency_intervention.json`).")
    return "\n".join(lines) + "\n"


def intervention_cost(o: Outputs) -> str:
    """The frequency intervention study's wall time (bench_repro.py --target studies/frequency-intervention/dvc.yaml)."""
    return _repro_line(o, "bench_repro-frequency-intervention", "the frequency intervention study")


def pie_cost(o: Outputs) -> str:
    """The PIE treatment study's wall time (bench_repro.py --target studies/pie-treatment/dvc.yaml)."""
    return _repro_line(o, "bench_repro-pie-treatment", "the PIE treatment study")


def compare_table(o: Outputs) -> str:
    """Which verdicts survive other draws of the synthetic data and other architectures:
    reports/compare.md's table, verdict symbols only, one column per experiment (``cxrprune
    compare``), each headed by what it changes."""
    path = o.root / "reports/compare.md"
    if not path.exists():
        return "No committed `reports/compare.md` yet: run the experiments above, then `cxrprune compare`.\n"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in path.read_text().splitlines() if line.startswith("|")]
    head, body = rows[0], [r for r in rows[2:]]
    axes = {r[0].strip("*"): r[1:-1] for r in body if r[0].startswith("*")}
    short = {"train.arch": "{}", "synthetic.seed": "seed {}"}  # how an axis reads in a column head

    def what(i: int) -> str:
        """The first column: its architecture and seed; the others: what differs from it."""
        keys = [k for k in short if k in axes] if i == 0 else [k for k in axes if axes[k][i] != axes[k][0]]
        return ", ".join(short.get(k, k + " {}").format(axes[k][i]) for k in keys)

    out = ["| finding | " + " | ".join(f"{n} ({what(i)})" if what(i) else n for i, n in enumerate(head[1:-1]))
           + " | reproduced |", "| --- |" + " --- |" * (len(head) - 1)]
    for r in body:
        if r[0].startswith("*"):
            continue
        out.append(f"| {r[0]} | " + " | ".join(cell.split(" ", 1)[0] for cell in r[1:-1]) + f" | {r[-1]} |")
    legend = next((line for line in path.read_text().splitlines() if line.startswith("Source:")), "")
    symbols = legend.split("Cells: ", 1)[-1].split(". ", 1)[-1]  # the symbols' legend after the cells' description
    return "\n".join(out) + f"\n\n{symbols}\n"


def _reproduced_column(path: Path) -> dict[str, str]:
    """finding title -> the last cell ("k of n draws") of a `cxrprune compare` table."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in path.read_text().splitlines() if line.startswith("|")]
    return {r[0]: r[-1] for r in rows[2:] if not r[0].startswith("*")}


def pie_routes(o: Outputs) -> str:
    """Which routes make flipped / degraded images PIEs for fixed networks (benchmarks/pie_routes.py)."""
    b = o.bench("pie_routes")
    if b is None:
        return "Not measured yet: run `benchmarks/pie_routes.py --workspace DIR` on a trained workspace.\n"
    w = b["figures"]["workspace"]
    out = ["| routes drawn (`effect: 1`) | flipped images' PIE rate / others' | degraded images' PIE rate / "
           "pristine ones' | quality, PIE minus non-PIE | 3+ findings ratio |", "| --- | --- | --- | --- | --- |"]
    for r in b["figures"]["settings"]:
        out.append(f"| {', '.join(r['mechanisms']) or 'none'} | {r['flipped_ratio']:.2f} | {r['degraded_ratio']:.2f} | "
                   f"{r['quality_difference']:+.3f} | {r['ratio_3plus']:.2f} |")
    return (f"Networks of `synthetic.seed` {w['synthetic_seed']} trained with `mechanisms: "
            f"[{', '.join(w['trained_on'])}]`, {len(w['seeds'])} seeds, {w['test_images']} test images redrawn "
            f"({_machine(b)}):\n\n" + "\n".join(out) + "\n")


def fcd_noise(o: Outputs) -> str:
    """How much of each planted draw's FCD is its curves' seed-to-seed noise (benchmarks/fcd_noise.py)."""
    b = o.bench("fcd_noise")
    if b is None:
        return "Not measured yet: run `benchmarks/fcd_noise.py` on the `frequency` arm's draws.\n"
    draws = b["figures"]["draws"]

    def row(key: str) -> str:
        return ", ".join(f"{d[key]:+.2f}" for d in draws)

    hits = sum(d["corrected_vs_dlnf_p"] < 0.05 for d in draws)
    return (f"Per draw ({', '.join(d['draw'] for d in draws)}; `benchmarks/results/fcd_noise.json`, {_machine(b)}), "
            f"Spearman rho over the pairs of the finding's classes: FCD vs |d ln f| (the finding) {row('fcd_vs_dlnf')}; "
            f"FCD vs the pair's summed curve noise {row('fcd_vs_noise')}; that noise vs |d ln f| "
            f"{row('noise_vs_dlnf')}; the noise-corrected distance vs |d ln f| {row('corrected_vs_dlnf')} "
            f"(Mantel p < 0.05 in {hits} of {len(draws)}). Noisiest curves: "
            + "; ".join(f"{d['draw']}: {d['noisiest']}" for d in draws) + ".\n")


# The calibration's arms (README: Calibration), in the order a finding's own arm is looked for:
# a finding is judged in the first planted arm whose routes include its routes, and every
# planted arm that plants none of its routes shows whether another route moves its statistic.
# `frequency` plants that route alone and `pie-routes` the four PIE routes without it: planted
# together, the routes compete for the fixed share of test images that are PIEs (commit 0b432af;
# README, the fixed-network table's last row), so no arm plants every route.
ARMS = (("frequency", "`frequency` alone", frozenset({"frequency"})),
        ("pie-routes", "the PIE routes alone",
         frozenset({"label_noise", "quality", "ambiguity", "mottle"})),
        ("none", "nothing planted", frozenset()))


def calibration(o: Outputs) -> str:
    """The calibration: each finding reproduced in how many draws of each arm
    (reports/calibration-<arm>.md, `cxrprune compare --name`), against the targets: a planted
    finding in >= 4 of 5 draws of the arm that plants its route, any finding in <= 1 of 5 with
    none planted, and in <= 1 of 5 of the arm that does not plant its route."""
    from cxrprune.analysis.findings import CLAIMS

    f = o.csv("metrics/synthetic/forgettability.csv")
    learned = f["dense_auroc_lo"] > 0.5
    lost = ", ".join(f"{r.class_name} ({r.train_count} training images, dense AUROC {r.dense_auroc:.2f} "
                     f"[{r.dense_auroc_lo:.2f}, {r.dense_auroc_hi:.2f}])" for r in f[~learned].itertuples())
    learn_line = (f"Visible is not learned: in the committed default, {int(learned.sum())} of {len(f)} classes have a "
                  f"dense AUROC interval above 0.5 (`metrics/synthetic/forgettability.csv`)"
                  + (f"; not learned, so left out of the forgetting analyses: {lost}" if lost else "") + ".\n\n")
    mds = {arm: o.root / f"reports/calibration-{arm}.md" for arm, _, _ in ARMS}
    if not all(md.exists() for md in mds.values()):
        return learn_line + "No committed calibration draws yet: run the commands above.\n"
    cells = {arm: _reproduced_column(md) for arm, md in mds.items()}

    def count(cell: str) -> tuple[int, int]:
        m = re.match(r"(\d+) of (\d+) draws", cell)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

    def at_most_one_in_five(cell: str) -> bool:
        k, n = count(cell)
        return n > 0 and k <= 0.2 * n

    out = ["| finding | route | " + " | ".join(f"reproduced, {label}" for _, label, _ in ARMS) + " | target |",
           "| --- | --- | " + " | ".join("---" for _ in ARMS) + " | --- |"]
    met, weak, false_pos, crossed = [], [], [], []
    for claim in CLAIMS:
        row = {arm: cells[arm].get(claim.title, "-") for arm, _, _ in ARMS}
        ok_fp = at_most_one_in_five(row["none"])
        if not ok_fp:
            false_pos.append(claim.title)
        if not claim.routes:
            target = "no route: not a calibration target" + ("" if ok_fp else "; reproduced with nothing planted")
        else:
            own = [arm for arm, _, routes in ARMS if routes and set(claim.routes) <= routes]
            other = [arm for arm, _, routes in ARMS if routes and not routes & set(claim.routes)]
            k, n = count(row[own[0]]) if own else (0, 0)
            ok_power = n > 0 and k >= 0.8 * n
            ok_apart = all(at_most_one_in_five(row[arm]) for arm in other)
            if not ok_apart:
                crossed.append(claim.title)
            if ok_power and ok_fp:
                met.append(claim.title)
            elif ok_fp:
                weak.append(claim.title)
            notes = [x for x, ok in (("missed: detected in too few planted draws", ok_power),
                                     ("missed: false positives", ok_fp)) if not ok] or ["met"]
            target = ", ".join(notes + ([] if ok_apart else ["also reproduced by another route"]))
        out.append(f"| {claim.title} | {', '.join(claim.routes) or 'none'} | "
                   + " | ".join(row[arm] for arm, _, _ in ARMS) + f" | {target} |")
    routed = [c for c in CLAIMS if c.routes]

    def names(titles: list[str]) -> str:
        return "; ".join(f"*{t}*" for t in titles) if titles else "none"

    verdict = (f"\n\nOf the {len(routed)} findings a route plants, targets met (reproduced in at least 4 of 5 "
               f"draws of the arm that plants the route, at most 1 of 5 with nothing planted): {names(met)}. Planted "
               f"but detected in too few draws: {names(weak)}. Reproduced in more than 1 of 5 draws of the arm that "
               f"does not plant the finding's route (a route moving a statistic not its own): {names(crossed)}. "
               f"Reproduced in more than 1 of 5 draws with nothing planted (a property every draw of the generator "
               f"has, or a false positive): {names(false_pos)}.")
    return (learn_line + "\n".join(out) + verdict + _route_values(o, ("frequency",))
            + _route_values(o, ("ambiguity", "mottle")) + "\n")


def _route_values(o: Outputs, routes: tuple[str, ...]) -> str:
    """Each draw's value of the statistics ``routes`` plant, in the arm that plants them and in the
    arm with nothing planted, side by side (the committed compare snapshots): whether the planted
    draws sit apart from the ones with nothing planted shows more than the counts of significant
    draws."""
    from scipy.stats import mannwhitneyu

    from cxrprune.analysis import compare
    from cxrprune.analysis.findings import CLAIMS
    from cxrprune.stats.multiplicity import holm

    planted_arm = next(arm for arm, _, arm_routes in ARMS if set(routes) <= arm_routes)
    arms = {arm: sorted(compare.load(o.root / f"reports/calibration-{arm}")[0], key=lambda e: e.name)
            for arm in (planted_arm, "none")}

    def values(arm: str, key: str) -> list[float]:
        return [v for e in arms[arm] if (v := e.findings["findings"].get(key, {}).get("value")) is not None]

    def unadjusted(arm: str, claim) -> str:
        """Draws whose own p (before the report's Holm adjustment over its findings) is below the
        report's alpha, the paper's way: what a missed target owes to that adjustment."""
        hits = 0
        for e in arms[arm]:
            f = e.findings["findings"].get(claim.key, {})
            value, p = f.get("value"), f.get("p")
            hits += (value is not None and p is not None and (value - claim.null) * claim.direction > 0
                     and p < e.findings["alpha"])
        return f"{hits} of {len(arms[arm])}"

    claims = [c for c in CLAIMS if set(routes) & set(c.routes) and c.direction != 0]
    if not claims:
        return ""
    sides, apart = [], []
    for claim in claims:
        planted, none = values(planted_arm, claim.key), values("none", claim.key)

        def side(v: list[float]) -> str:
            ways = sum((x - claim.null) * claim.direction > 0 for x in v)
            return f"{', '.join(f'{x:+.2f}' for x in v)} ({ways} of {len(v)} the paper's way)"
        sides.append((side(planted), side(none)))
        # Draws are the unit here (each a new generator seed): do the planted draws' values sit
        # the paper's way of the unplanted ones? Exact rank-sum test, one-sided in that direction.
        apart.append(mannwhitneyu(planted, none, alternative="greater" if claim.direction > 0 else "less",
                                  method="exact").pvalue)
    whose = "the routes'" if len(routes) > 1 else "the route's"
    rows = [f"*{c.title}* ({c.statistic.split(';')[0]}): planted {sp}; nothing planted {sn}; its own p below "
            f"alpha the paper's way, before the report's Holm adjustment over its findings: planted "
            f"{unadjusted(planted_arm, c)}, nothing planted {unadjusted('none', c)}; planted draws the "
            f"paper's way of the unplanted ones: exact Mann-Whitney p {p:.3f}, Holm-adjusted over {whose} "
            f"statistics {q:.3f}" for c, (sp, sn), p, q in zip(claims, sides, apart, holm(apart).adjusted, strict=True)]
    named = " and ".join(f"`{r}`" for r in routes)
    return (f"\n\nEach draw's value of the statistics the {named} route{'s' if len(routes) > 1 else ''} "
            f"plant{'' if len(routes) > 1 else 's'} (`reports/calibration-{planted_arm}/*/"
            f"findings.json` and `reports/calibration-none/*/findings.json`, draws in name order): "
            + ". ".join(rows) + ".")


def operating_point_table(o: Outputs) -> str:
    """The default run's operating points per method (``cxrprune.analysis.readme``)."""
    from cxrprune.analysis.readme import render as render_points
    from cxrprune.core.layout import Layout

    here = os.getcwd()
    os.chdir(o.root)  # Layout paths are relative to the repository root
    try:
        return render_points(Layout("synthetic"))
    finally:
        os.chdir(here)


def deployment_table(o: Outputs) -> str:
    """The default's deployment page, its per-method table (``reports/synthetic/deployment.json``)."""
    from cxrprune.analysis.deployment import methods_table

    doc = o.json("reports/synthetic/deployment.json")
    return (f"From `reports/synthetic/deployment.json` (class tolerance {doc['class_tolerance']:g}; the whole page: "
            f"[`reports/synthetic/deployment.md`](reports/synthetic/deployment.md)):\n\n"
            + "\n".join(methods_table(doc["methods"])) + "\n")


def repro_time(o: Outputs) -> str:
    """The default study's wall time (benchmarks/bench_repro.py: `dvc repro` from nothing),
    every other run of the same default kept as ``bench_repro-default-<date>.json`` (one
    machine has given quite different times at different hours, and a budget has to hold for
    the slowest of them), and the runs of the default before ``train.conv_weight_grad: gemm``
    kept as ``bench_repro-native-default-<date>.json``."""
    line = _repro_line(o, "bench_repro", "the default").rstrip("\n")
    for pattern, what in (("bench_repro-default-*.json", "Other runs of the same default"),
                          ("bench_repro-native-*.json", "Runs of the default before `train.conv_weight_grad: gemm` "
                                                        "(torch's own backward; other code of their date)")):
        runs = [_earlier_run(o, path) for path in sorted((o.root / "benchmarks" / "results").glob(pattern))]
        if runs:
            line += f" {what}: " + "; ".join(runs) + "."
    return line + "\n"


def _was_shared(f: dict, m: dict) -> bool:
    """Whether a bench_repro run's stages got under 3/4 of the machine's cores: on a quiet
    machine they keep most of its cores busy, so less means other work ran beside them and the
    wall time overstates a quiet run's (one rule for every run the README shows)."""
    return f["children_cpu_share"] < 0.75 * m["nproc"]


def _earlier_run(o: Outputs, path: Path) -> str:
    b = json.loads(path.read_text())
    f, m = b["figures"], b["machine"]
    kind = _kind(m)
    shared = ", shared with other work" if _was_shared(f, m) else ""
    return (f"{_min_s(f['total_s'])} ({m['cpu_model']}{', ' + kind if kind else ''}, {m['started_utc']}, "
            f"the stages' CPU share {f['children_cpu_share']:.2f}{shared}; `{path.relative_to(o.root)}`)")


def repro_trade(o: Outputs, budget_s: float = 600.0) -> str:
    """What the 10-minute budget buys on the machine of ``bench_repro.json``: the stages that run
    once, the cost of one more seed (its train and prune stages), and how many seeds fit."""
    b = o.bench("bench_repro")
    if not b:
        return "No committed `benchmarks/results/bench_repro.json`: the trade is not measured.\n"
    stages, m = b["figures"]["stages_s"], b["machine"]
    per_seed = [s for name, s in stages.items() if name.split("@")[0] in ("train", "prune")]
    n_seeds = sum(name.startswith("train@") for name in stages)
    fixed = sum(s for name, s in stages.items() if name.split("@")[0] not in ("train", "prune"))
    seed_s = sum(per_seed) / n_seeds
    fits = int((budget_s - fixed) // seed_s)
    text = (f"On {m['cpu_model']} (`benchmarks/results/bench_repro.json`) the stages that run once took "
            f"{fixed:.0f} s and each seed {seed_s:.0f} s (its training and its compression at every level), so "
            f"{_min_s(budget_s)} hold {fits} seeds; the default trains {n_seeds}.")
    if fits < n_seeds:
        text += (f" The trade is kept on the side of power, so `make repro` exceeds the budget on that kind: "
                 f"every per-level test is across seeds (a paired t-test over {fits} seeds has {fits - 1} degrees "
                 f"of freedom, over {n_seeds} it has {n_seeds - 1}). `dvc exp run -S 'seeds=["
                 + ",".join(map(str, range(fits))) + "]'` is the run that fits.")
    return text + "\n"


def _kind(m: dict) -> str:
    """Which of the project's CPU kinds a benchmark machine is, and whether its kernels were
    limited to AVX2 (then the time is an estimate of the AVX2-only kind, not a measurement)."""
    flags = m.get("cpu_flags") or []
    kind = "with AMX" if "amx_bf16" in flags else ("with AVX-512 BF16, no AMX" if "avx512_bf16" in flags else "")
    if m.get("kernel_limits", {}).get("ATEN_CPU_CAPABILITY") == "avx2":
        kind += ("; " if kind else "") + "torch and numpy limited to AVX2 kernels: an estimate of the AVX2-only kind"
    return kind


def _min_s(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _repro_line(o: Outputs, name: str, what: str) -> str:
    b = o.bench(name)
    if not b:
        return f"No committed output of `benchmarks/bench_repro.py` for {what} yet: the run time is not measured.\n"
    f, m = b["figures"], b["machine"]
    total = f["total_s"]
    groups = ", ".join(f"{stage} {s:.0f} s" for stage, s in f["stage_groups_s"].items())
    kind = _kind(m)
    shared = (f" The machine was shared during this run (the stages got {f['children_cpu_share']:.2f} of "
              f"{m['nproc']} cores): the stages' own CPU time was {f['children_cpu_s'] / 60:.0f} CPU-minutes, and a "
              "quiet run takes less wall time." if _was_shared(f, m) else "")
    return (f"**{_min_s(total)}** for `dvc repro` of {what} from nothing on "
            f"{m['cpu_model']} ({m['nproc']} cores{', ' + kind if kind else ''}; the stages' CPU share "
            f"{f['children_cpu_share']:.2f}, {m['started_utc']}; `benchmarks/results/{name}.json`): {groups}."
            f"{shared}\n")


def validation(o: Outputs) -> str:
    """Each finding's false-positive rate and power on planted effects, from
    ``benchmarks/results/verdicts.json`` (``cxrprune validate``) alone, with its command and machine."""
    doc = o.bench("verdicts")
    if doc is None:
        return "`benchmarks/results/verdicts.json` is missing: run `cxrprune validate` (command in its README section).\n"
    effects = [e for e in doc["effects"] if e != 0]
    head = ["finding", "false-positive rate (nothing planted)"] + [f"power, e = {e:g}" for e in effects]
    rows = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]

    def cell(rates: dict | None) -> str:
        r = (rates or {}).get("reproduced")
        return "n/a" if not r else f"{r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"

    for key, f in doc["findings"].items():
        by = f["by_effect"]
        title = f["title"] + (" (threshold: see below)" if f.get("threshold_finding") else "")
        rows.append("| " + " | ".join([title, cell(by.get("0"))] + [cell(by.get(f"{e:g}")) for e in effects]) + " |")
    foot = doc["footer"]
    paper = o.bench("verdicts-paper-statistics")
    if paper is not None:  # the same planted nulls through the paper's own statistics (an earlier run)
        rates = [f"{paper['findings'][k]['title']} {cell(paper['findings'][k]['by_effect'].get('0'))}"
                 for k in ("rare_forgotten_earlier", "rare_forgotten_more", "fcd_frequency", "fcd_cooccurrence")
                 if k in paper["findings"]]
        rows.append("\nThe paper's own statistics (relative AP change) on the same kind of planted nulls, "
                    "[`benchmarks/results/verdicts-paper-statistics.txt`](benchmarks/results/verdicts-paper-statistics.txt), "
                    "false-positive rates: " + "; ".join(rates) + ".")
    covered = []
    for f in doc["findings"].values():
        rates = [(e, r["coverage"]) for e, r in f["by_effect"].items() if r.get("coverage")]
        if rates:
            e, low = min(rates, key=lambda t: t[1]["rate"])
            covered.append(f"{f['title']} {low['rate']:.3f} [{low['ci'][0]:.3f}, {low['ci'][1]:.3f}] (e = {e})")
    if covered:
        rows.append("\nCoverage of the 95% intervals (the share of replicates whose interval contains the "
                    "replicate's true value), lowest over the effect sizes: " + "; ".join(covered) + ".")
    busy = foot["wall_seconds"] > 1.2 * doc["seconds_per_replicate"]["cpu_total"] / foot["workers"]
    shared = "; the wall time exceeds CPU time / workers: the cores were shared with other work" if busy else ""
    return ("\n".join(rows) + f"\n\n{doc['replicates']} replicates per effect size (Monte Carlo 95% Wilson intervals "
            f"in brackets), `{foot['command']}`: {foot['wall_seconds'] / 60:.1f} min wall on {foot['cpu']} "
            f"({foot['workers']} worker processes{shared}), "
            f"{doc['seconds_per_replicate']['cpu_total'] / 60:.1f} CPU-minutes, so "
            f"{doc['seconds_per_replicate']['cpu_total'] / 60 / foot['workers']:.1f} min on {foot['workers']} free cores; "
            "the full table with interval coverage and every verdict's share: "
            "[`benchmarks/results/verdicts.txt`](benchmarks/results/verdicts.txt).\n")


def verdict_changes(o: Outputs) -> str:
    """Which verdicts of the default changed with the reworked statistics: the committed report
    before the rework (``benchmarks/results/findings_before_verdict_rework.json``) against today's."""
    from cxrprune.analysis.findings import CLAIMS, NOT_MEASURED

    before = o.bench("findings_before_verdict_rework")["findings"]
    now = o.json("reports/synthetic/findings.json")["findings"]
    rows = ["| finding | verdict before | verdict now |", "| --- | --- | --- |"]
    for claim in CLAIMS:
        old, new = before.get(claim.key, {}).get("verdict", NOT_MEASURED), now.get(claim.key, {}).get("verdict", NOT_MEASURED)
        rows.append(f"| {claim.title} | {old} | {'**' + new + '**' if new != old else new} |")
    return "\n".join(rows) + "\n"


RENDER: dict[str, Callable[[Outputs], str]] = {
    "validation": validation, "verdict-changes": verdict_changes,
    "findings": findings, "why": why, "benchmarks": bench_table, "scaleout": scaleout, "repro": repro_time,
    "operating-points": operating_point_table, "train-speed": train_speed, "conv-grad": conv_grad, "pie-answer": pie_answer, "pie-cost": pie_cost,
    "intervention-answer": intervention_answer, "intervention-cost": intervention_cost,
    "compare": compare_table, "deployment": deployment_table, "calibration": calibration,
    "repro-trade": repro_trade, "pie-routes": pie_routes, "fcd-noise": fcd_noise, "gpu": gpu,
}


# ------------------------------------------------------------------------ the blocks

def render(text: str, o: Outputs) -> str:
    """``text`` with every numbers block replaced by what the outputs say."""
    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in RENDER:
            raise SystemExit(f"readme_numbers: unknown block {name!r} (known: {', '.join(RENDER)})")
        return m.group(1) + RENDER[name](o) + m.group(4)
    return BLOCK.sub(sub, text)


def stale(text: str, o: Outputs) -> list[str]:
    """Names of the blocks of ``text`` whose numbers differ from the outputs."""
    fresh = {m.group(2): m.group(3) for m in BLOCK.finditer(render(text, o))}
    return [m.group(2) for m in BLOCK.finditer(text) if fresh[m.group(2)] != m.group(3)]


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the blocks in place")
    ap.add_argument("--check", action="store_true", help="exit 1 if any block is stale")
    args = ap.parse_args(argv)
    o, bad = Outputs(ROOT), []
    for rel in DOCS:
        path = ROOT / rel
        text = path.read_text()
        if args.write:
            new = render(text, o)
            if new != text:
                _write(path, new)
                print(f"updated {rel}")
        elif args.check:
            bad += [f"{rel}: {name}" for name in stale(text, o)]
        else:
            for m in BLOCK.finditer(render(text, o)):
                print(f"--- {rel}: {m.group(2)}\n{m.group(3)}")
    if bad:
        print("stale numbers blocks (run python benchmarks/readme_numbers.py --write):\n  " + "\n  ".join(bad),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
