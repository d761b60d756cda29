"""DVC stage ``prepare``: validate the dataset and write ``data/prepared/<name>/``."""

from __future__ import annotations

from cxrprune.core.config import Params
from cxrprune.datasets.prepare import prepare_dataset
from cxrprune.core.stage import Stage


STAGE = Stage(name="prepare",
              help="validate a dataset, write label tables and the uint8 image cache")


def run(params: Params) -> None:
    meta = prepare_dataset(params.data)
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(f"prepared {params.data.name}: {counts} images at {meta['image_size']} px, "
          f"{len(meta['classes'])} classes -> {params.data.prepared_dir}")
