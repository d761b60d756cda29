"""How much of a class pair's FCD is the sampling noise of its two curves?

Not a speed benchmark: the measurement behind the README's account of why the calibration's
``frequency`` arm does not reproduce "FCD vs frequency" (Calibration). The finding reads the FCD
of retained-AUROC curves (``analysis/fcd.py``, ``analysis/chance_corrected.py``): for each class
the median over seeds of ``(AUROC_k - 0.5) / (AUROC_0 - 0.5)``. Dividing by the dense model's
lift above chance amplifies a weakly learned class's seed-to-seed noise, and the weakly learned
classes are mostly the rare ones, so a pair of rare classes (small |d ln f|) can sit far apart by
noise alone. This script measures, per draw and over the classes the finding uses:

- each class's curve noise (``fcd.curve_noise``): the standard deviation over seeds of its
  retained AUROC, averaged over the levels k > 0;
- Spearman's rho over the pairs of the pipeline's FCD with the pair's summed noise and with
  |d ln f| (the latter is the finding's statistic: checked against the draw's ``summary.json``,
  so this reads the same curves the pipeline read), and of the summed noise with |d ln f|;
- a noise-corrected distance, the unbiased estimate of the squared distance between the two
  classes' *expected* curves: ``sum_k mean_s(d)^2 - var_s(d) / S`` with ``d`` the per-seed
  difference of the two retained curves (seeds paired: both classes come from the same
  network), and its Mantel test against |d ln f| (``stats/mantel.py``, 9,999 class permutations).

What it cannot show: the noise-corrected distance is measured here on the planted draws only; it
is not a verdict of the pipeline, and using one would first need its false-positive rate on the
draws with nothing planted (README, Calibration).

Input: one directory per draw holding that draw's ``per_class.csv``, ``summary.json`` and
``labels_test.parquet`` (the prepare stage's, for |d ln f| over the finding's classes exactly as
the pipeline takes it), e.g. for the experiments of the calibration loop, in their workspace (the
experiment's lock and metrics from git, its prepared labels from the DVC cache)::

    for k in 13 14 15 16 17; do ref=$(git for-each-ref --format='%(refname)' "refs/exps/*/*/freq-$k")
        git checkout $ref -- dvc.lock metrics/synthetic && dvc checkout prepare && mkdir -p /tmp/freq-$k &&
        cp metrics/synthetic/per_class.csv metrics/synthetic/summary.json \\
            data/prepared/synthetic/labels_test.parquet /tmp/freq-$k/; done
    python benchmarks/fcd_noise.py /tmp/freq-{13,14,15,16,17}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from common import record  # sets up sys.path for src/
from scipy.stats import spearmanr

from cxrprune.analysis import fcd, forgetting
from cxrprune.analysis.chance_corrected import AUROC_CHANCE
from cxrprune.stats.mantel import mantel, pairs_to_matrix


def corrected_sq_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared distance of two expected curves from paired per-seed curves (L, S)."""
    d = a - b
    n = np.sum(np.isfinite(d), axis=1)
    mean = np.nanmean(d, axis=1)
    var = np.nanvar(d, axis=1, ddof=1)
    return float(np.sum(mean ** 2 - var / n))


def draw(path: Path) -> dict[str, float | str]:
    summary = json.loads((path / "summary.json").read_text())["fcd"]
    per_class = pd.read_csv(path / "per_class.csv")
    test_labels = pd.read_parquet(path / "labels_test.parquet")
    excluded = {e["class"] for e in summary["auroc_classes_excluded"]}
    every = list(dict.fromkeys(per_class["class_name"]))
    classes = [c for c in every if c not in excluded]
    # retained AUROC - 1 per seed, level and class, as analysis/chance_corrected.py takes it
    rel = forgetting.relative_change(per_class, "l1", pd.Series(AUROC_CHANCE, index=every), "auroc")
    pairs = fcd.fcd_pairs(forgetting.forgettability_curves(rel, classes), test_labels, classes)
    rho = spearmanr(pairs["fcd"], pairs["abs_dlnf"]).statistic
    if not np.isclose(rho, summary["auroc_freq_rho"]):
        raise SystemExit(f"{path}: FCD vs |d ln f| rho {rho:.4f} is not the pipeline's {summary['auroc_freq_rho']:.4f}")
    noise = fcd.curve_noise(rel, classes)
    summed = noise.reindex(pairs["class_a"]).to_numpy() + noise.reindex(pairs["class_b"]).to_numpy()
    cube = rel.pivot_table(index=["level", "seed"], columns="class_name", values="rel_dap", dropna=False)[classes]
    cube = cube.to_numpy(dtype=np.float64).reshape(len(cube.index.levels[0]), len(cube.index.levels[1]), len(classes))
    col = {c: i for i, c in enumerate(classes)}
    pairs["corrected"] = [corrected_sq_distance(cube[:, :, col[a]], cube[:, :, col[b]])
                          for a, b in zip(pairs["class_a"], pairs["class_b"])]
    m = {c: pairs_to_matrix(pairs, "class_a", "class_b", c, classes) for c in ("corrected", "abs_dlnf")}
    test = mantel(m["corrected"], m["abs_dlnf"], method="spearman", permutations=fcd.MANTEL_PERMUTATIONS,
                  seed=fcd.MANTEL_SEED)
    noisiest = noise.sort_values(ascending=False).head(3)
    return {"classes": len(classes), "fcd_vs_dlnf": rho, "fcd_vs_dlnf_p": summary["auroc_freq_rho_p"],
            "fcd_vs_noise": fcd.noise_rho(pairs, noise), "noise_vs_dlnf": spearmanr(summed, pairs["abs_dlnf"]).statistic,
            "corrected_vs_dlnf": test.r, "corrected_vs_dlnf_p": test.p, "median_noise": float(noise.median()),
            "noisiest": ", ".join(f"{c} {v:.2f}" for c, v in noisiest.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("draws", nargs="+", help="one directory per draw (see the docstring)")
    args = ap.parse_args()
    with record("fcd_noise", args) as fig:
        table = pd.DataFrame({Path(p).name: draw(Path(p)) for p in args.draws}).T
        print("FCD of retained-AUROC curves (L1, the finding's classes): Spearman rho over class pairs")
        print(table.drop(columns="noisiest").to_string(float_format=lambda v: f"{v:.3f}"))
        print("noisiest classes (mean over levels of the SD over seeds of retained AUROC):")
        for name, row in table.iterrows():
            print(f"  {name}: {row['noisiest']}")
        fig["draws"] = table.reset_index(names="draw").to_dict(orient="records")


if __name__ == "__main__":
    main()
