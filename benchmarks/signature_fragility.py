"""How much of each finding's drawing do L1-pruned networks keep, with no route planted?

Not a speed benchmark: the measurement behind the README's account of the ``frequency`` route
(Calibration). In the calibration draws with nothing planted (``synthetic.mechanisms: []``),
which findings a pruned network forgets is set mostly by how each finding is drawn, not by how
often it occurs: a class's retained AUROC lift correlates across independent draws (mean
pairwise Spearman rho printed below), and not with prevalence. Those class-to-class differences
are what a per-draw correlation with frequency over 20 classes has to see through. Commit
``0b432af`` drew the rarer classes with the drawings this order ranks least kept (the k-th rarest
class as the k-th finding of ``order``) and ran five planted draws: forgetting then separated the
arms across draws, but per draw it stayed underpowered and the PIE routes lost their PIEs to it
(README, Calibration), so that route was not kept.

Input: the ``metrics/<name>/per_class.csv`` of each unplanted draw (seeds x methods x levels x
classes). For each draw, each finding's retained AUROC lift at ``--level`` is
``(AUROC_pruned - 0.5) / (AUROC_dense - 0.5)`` of the seed-mean L1 AUROCs (the statistic of
``analysis/chance_corrected.py`` at one level); the ranking is by its median over draws, least
kept first (the median: a draw where a class was barely learned divides by a lift near 0).
"No Finding" has no drawing and is left out. What it cannot show:
how a drawing fares for a class with another training count (commit ``0b432af``'s planted draws
measured that).

    for k in 1 2 3 4 5; do git -C CAL show refs/exps/.../none-$k:metrics/synthetic/per_class.csv > /tmp/none-$k.csv; done
    python benchmarks/signature_fragility.py /tmp/none-{1,2,3,4,5}.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from common import record  # sets up sys.path for src/
from scipy.stats import spearmanr

from cxrprune.analysis.chance_corrected import AUROC_CHANCE
from cxrprune.analysis.forgetting import relative_ap
from cxrprune.core.classes import NIH_CXR_LT_CLASSES, nih_train_prevalence


def retained_lift(per_class: pd.DataFrame, level: float) -> pd.Series:
    """Each class's retained AUROC lift at ``level`` from one draw's per-class table (L1)."""
    l1 = per_class[per_class["method"] == "l1"]
    mean = l1.groupby(["level", "class_name"])["auroc"].mean().unstack()
    at = mean.index[np.isclose(mean.index, level)]
    if len(at) != 1:
        raise SystemExit(f"level {level} is not one of the table's levels {list(mean.index)}")
    # relative_ap against chance is retained - 1 (NaN where the dense model is not above chance)
    return pd.Series(relative_ap(mean.loc[at[0]], mean.loc[0.0], AUROC_CHANCE) + 1.0, index=mean.columns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", help="per_class.csv of each unplanted draw")
    ap.add_argument("--level", type=float, default=0.85,
                    help="sparsity (default 0.85: the half-life level of four of the five committed unplanted draws)")
    args = ap.parse_args()
    with record("signature_fragility", args) as fig:
        draws = pd.DataFrame({f"draw_{i + 1}": retained_lift(pd.read_csv(t), args.level)
                              for i, t in enumerate(args.tables)}).drop(index="No Finding")
        rho = draws.corr(method="spearman").to_numpy()
        pairwise = float(rho[np.triu_indices(len(draws.columns), 1)].mean())
        out = draws.assign(median=draws.median(axis=1)).sort_values("median", kind="stable")
        prevalence = pd.Series(nih_train_prevalence(), index=list(NIH_CXR_LT_CLASSES)).loc[out.index]
        # Whether the unplanted draws already tie what pruning keeps to frequency: printed beside it.
        vs_prevalence = float(spearmanr(out["median"], prevalence).statistic)
        print(f"retained AUROC lift at {args.level:g} sparsity, L1, seed-mean, {len(draws.columns)} unplanted draws")
        print(f"mean pairwise Spearman rho of the per-finding values across draws: {pairwise:.2f}")
        print(f"Spearman rho of the median vs NIH prevalence: {vs_prevalence:+.2f}")
        print(out.round(3).to_string())
        fig.update(level=args.level, pairwise_rho=pairwise, rho_vs_prevalence=vs_prevalence,
                   order=list(out.index), median=out["median"].to_dict(),
                   draws={c: draws[c].to_dict() for c in draws.columns})


if __name__ == "__main__":
    main()
