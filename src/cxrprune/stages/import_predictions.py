"""``cxrprune import-predictions``: the authors' published predictions as this project's tables.

Not a dvc.yaml stage: its outputs are those of the prepare and prune stages
(``data/prepared/<data.name>/`` labels + meta, ``data/predictions/<data.name>/seed-<s>.parquet``;
DVC allows one producer per output), written from a folder of published pickles so that the
evaluate and analyze stages run on them unchanged. Use a ``data.name`` of its own (e.g.
``nih-cxr-lt-published``), ``prune.methods: [l1]`` (only L1 predictions were published), and
``seeds`` / ``prune.levels`` naming the files to import (the paper: seeds 0..29, 20 levels).

Then run only the stages after prune, never their upstream stages:
``dvc repro --single-item evaluate analyze`` (short: ``dvc repro -s evaluate analyze``).
A plain ``dvc repro`` would rerun prepare/train/prune for this data.name over the imported
files, and ``dvc exp run`` deletes them (they are not in the DVC cache); version the
downloaded pickles and label CSVs instead (``dvc add data/raw/...``), from which the import
is deterministic. The logic lives in :mod:`cxrprune.datasets.importer`.
"""

from __future__ import annotations

import argparse

from cxrprune.core import catalog
from cxrprune.core.config import Params
from cxrprune.core.errors import ConfigError
from cxrprune.datasets.importer import import_predictions, report
from cxrprune.core.stage import Stage


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folder", required=True, help="folder of {dataset}_resnet50_seed-{s}_prune-{k}.pkl files")
    p.add_argument("--labels", required=True, help="the dataset's test label CSV, or the folder holding its label CSVs")
    p.add_argument("--dataset", choices=[s.name for s in catalog.SOURCES.values() if s.published_predictions],
                   default="nih-cxr-lt",
                   help="which dataset the predictions are of (default: nih-cxr-lt)")
    p.add_argument("--train-labels", default=None,
                   help="the train label CSV (default: the test CSV's name with test -> train)")


STAGE = Stage(name="import-predictions",
              help="convert the authors' published prediction pickles into this project's prediction tables and "
                   "test labels",
              arguments=_arguments)


def run(params: Params, folder: str, labels: str, dataset: str = "nih-cxr-lt",
        train_labels: str | None = None) -> None:
    if list(params.prune.methods) != ["l1"]:
        raise ConfigError(f"prune.methods is {params.prune.methods}, but the published predictions are L1 only and "
                          f"evaluate expects every configured method: set prune.methods: [l1] for "
                          f"data.name {params.data.name!r}")
    summary = import_predictions(
        folder, labels, dataset,
        seeds=params.seeds, levels=params.prune.levels,
        prepared_dir=params.layout.prepared,
        predictions_dir=params.layout.predictions,
        train_labels=train_labels,
        models_dir=params.layout.models,
    )
    report(summary)
