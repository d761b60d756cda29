"""Which drawings of flipped and degraded images make them PIEs, for fixed trained networks?

Not a speed benchmark: the measurement behind the generator's PIE routes
(``src/cxrprune/datasets/synth/mechanisms.py``). A full calibration draw retrains every network
(5-15 min); this holds the networks fixed and redraws only the test images, so each route's
effect on which images become PIEs is measured in seconds, apart from the networks' response
to being trained on such images.

From a trained default workspace (``--workspace``: its ``params.yaml``, and the dense
``model.pt`` of every seed; train it with ``mechanisms: []`` so no route shaped the networks),
for each setting of ``synthetic.mechanisms`` at ``synthetic.effect`` 1 the test split is rendered
again (same patients, labels, flips and degradations: the routes change pixels only), resized as
``prepare`` does, and scored by the seeds' dense networks and by the same networks L1-pruned to
``analyze.pie_sparsity``; PIEs are then selected as the analysis does (rank correlation of the
dense and pruned ensembles' class vectors, lowest ``analyze.pie_fraction``). Printed per setting:
the PIE rate of flipped images over that of the others, the same for degraded images, the
quality difference (PIE minus non-PIE: the ``pie_low_quality`` statistic) and the 3+ findings
ratio. Ratios near 1 say the route does not reach the PIE statistic, whatever it does to
accuracy. What it cannot show: networks trained on a route's images may learn to discount it,
so the effect in a full draw (README, Calibration) is the one that counts.

    PYTHONPATH=src python benchmarks/pie_routes.py --workspace /path/to/trained/workspace
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
from common import record  # sets up sys.path for src/

SETTINGS = {
    "none": [],
    "label_noise": ["label_noise"],
    "quality": ["quality"],
    "ambiguity": ["ambiguity"],
    "mottle": ["mottle"],
    "label_noise+quality": ["label_noise", "quality"],
    "PIE routes": ["label_noise", "quality", "ambiguity", "mottle"],  # the calibration's PIE-routes arm
    "all five": ["frequency", "label_noise", "quality", "ambiguity", "mottle"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, help="a default workspace with trained seeds")
    args = ap.parse_args()
    with record("pie_routes", args) as fig:
        run(args, fig)


def _render(cfg, out_dir: Path, task):
    from cxrprune.datasets.synth import generate
    return generate.render_patient(cfg, out_dir, task)


def run(args, fig: dict) -> None:
    import torch

    from cxrprune.analysis.pies import rowwise_spearman, select_pies
    from cxrprune.compression.masks import GlobalPruner
    from cxrprune.compression.predict import predict_probs
    from cxrprune.core.config import load_params
    from cxrprune.datasets.prepare import load_image
    from cxrprune.datasets.synth import generate
    from cxrprune.datasets.synth.labels import FINDING_INDICES
    from cxrprune.training.modelfile import load_checkpoint

    ws = Path(args.workspace).resolve()
    params = load_params(ws / "params.yaml")
    plans = [p for p in generate.plan_dataset(params.synthetic) if p.split == "test"]
    ids = [generate.image_id(p.patient, k) for p in plans for k in range(len(p.true))]
    flipped = np.array([f >= 0 for p in plans for f in p.flipped])
    # Findings per image as the analysis counts them: the CSV (noisy) labels, No Finding excluded.
    counts = np.stack([row for p in plans for row in p.noisy])[:, list(FINDING_INDICES)].sum(axis=1)
    model_files = [ws / "data" / "models" / params.data.name / f"seed-{s}" / "model.pt" for s in params.seeds]
    models = [load_checkpoint(f)[0] for f in model_files]
    print(f"workspace {ws}: synthetic.seed {params.synthetic.seed}, mechanisms the networks were trained on "
          f"{params.synthetic.mechanisms}, {len(models)} seeds, {len(ids)} test images, "
          f"{int(flipped.sum())} flipped; PIEs: L1 at {params.analyze.pie_sparsity}, "
          f"lowest {params.analyze.pie_fraction:g}")
    fig["workspace"] = {"synthetic_seed": params.synthetic.seed, "trained_on": list(params.synthetic.mechanisms),
                        "seeds": list(params.seeds), "test_images": len(ids),
                        "models_md5": [hashlib.md5(f.read_bytes()).hexdigest() for f in model_files]}
    device = torch.device("cpu")
    rows = []
    for name, routes in SETTINGS.items():
        cfg = dataclasses.replace(params.synthetic, mechanisms=routes, effect=1.0)
        tasks = [(p.patient, p.split, p.true, p.flipped) for p in plans]
        with tempfile.TemporaryDirectory() as tmp, multiprocessing.Pool(os.cpu_count() or 1) as pool:
            rendered = pool.map(functools.partial(_render, cfg, Path(tmp)), tasks, chunksize=8)
            images = torch.from_numpy(np.stack([load_image(f"{tmp}/{i}", params.data.image_size) for i in ids]))
        quality = np.array([q for r in rendered for q, _ in r])
        degraded = np.array([kind != "none" for r in rendered for _, kind in r])
        dense, pruned = [], []
        for model in models:
            dense.append(predict_probs(model, images, 512, device))
            pruner = GlobalPruner(model)
            pruner.reset("l1")
            pruner.apply(params.analyze.pie_sparsity)
            pruned.append(predict_probs(model, images, 512, device))
            pruner.restore()
        pie = select_pies(rowwise_spearman(np.mean(dense, 0), np.mean(pruned, 0)), params.analyze.pie_fraction)
        row = {"setting": name, "mechanisms": routes,
               "flipped_pie_rate": float(pie[flipped].mean()), "other_pie_rate": float(pie[~flipped].mean()),
               "degraded_pie_rate": float(pie[degraded].mean()), "pristine_pie_rate": float(pie[~degraded].mean()),
               "quality_difference": float(quality[pie].mean() - quality[~pie].mean()),
               "ratio_3plus": float(pie[counts >= 3].mean() / pie[counts < 3].mean())}
        row["flipped_ratio"] = row["flipped_pie_rate"] / row["other_pie_rate"]
        row["degraded_ratio"] = row["degraded_pie_rate"] / row["pristine_pie_rate"]
        rows.append(row)
        print(f"{name:22s} flipped PIE rate {row['flipped_pie_rate']:.3f} vs {row['other_pie_rate']:.3f} "
              f"({row['flipped_ratio']:.2f}x) | degraded {row['degraded_pie_rate']:.3f} vs "
              f"{row['pristine_pie_rate']:.3f} ({row['degraded_ratio']:.2f}x) | quality PIE - non-PIE "
              f"{row['quality_difference']:+.3f} | 3+ findings {row['ratio_3plus']:.2f}x", flush=True)
    fig["settings"] = rows


if __name__ == "__main__":
    main()
