"""``cxrprune generate``: write the synthetic CXR-LT dataset to ``data/raw/synthetic``.

A thin entry point for the DVC stage; the work is in :mod:`cxrprune.datasets.synth.generate`. The
folder is fixed (not ``data.root``) so that pointing ``data.root`` at a real dataset can
never overwrite it with synthetic images.
"""

from __future__ import annotations

from cxrprune.core.config import Params
from cxrprune.core.layout import SYNTHETIC_ROOT
from cxrprune.datasets.synth.generate import generate_dataset
from cxrprune.core.stage import Stage


STAGE = Stage(name="generate",
              help="write the synthetic CXR-LT dataset in the NIH-CXR-LT layout")


def run(params: Params) -> None:
    summary = generate_dataset(params.synthetic, SYNTHETIC_ROOT)
    per_split = ", ".join(f"{split} {n}" for split, n in summary["counts"].items())
    print(f"generated {summary['images']} images ({per_split}) in {SYNTHETIC_ROOT} "
          f"in {summary['seconds']:.1f} s; {summary['flipped']} flipped labels, "
          f"{summary['degraded']} degraded images")
