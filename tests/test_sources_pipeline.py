"""The whole pipeline on a fixture dataset of each source, in-process.

:func:`run_source_pipeline` builds a tiny dataset in a source's exact layout, then runs the
stage entry points ``prepare -> train@s -> prune@s -> evaluate -> analyze`` (the functions
``dvc.yaml`` calls) with params built by :func:`cxrprune.core.config.from_dict`, inside
``tmp_path`` (chdir) with an sqlite MLflow store there. It is meant to be reused, e.g.::

    from test_sources_pipeline import run_source_pipeline
    result = run_source_pipeline(tmp_path, "medmnist", monkeypatch)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from nih_layout import write_nih_dataset
from source_layouts import write_csv_dataset, write_medmnist, write_mimic_dataset

from cxrprune.core.config import Params, from_dict
from cxrprune.datasets.prepare import load_meta

SOURCES = ("nih-cxr-lt", "mimic-cxr-lt", "csv", "medmnist")
SEEDS = (0, 1)
LEVELS = (0.0, 0.5, 0.9)


def write_fixture(source: str, root: Path) -> dict[str, Any]:
    """A tiny dataset of ``source`` at ``root``; returns the ``data`` params that read it."""
    if source == "nih-cxr-lt":
        write_nih_dataset(root, per_split=24)
        return {"source": source, "root": str(root)}
    if source == "mimic-cxr-lt":
        write_mimic_dataset(root / "mimic-cxr-jpg", label_dir=root / "labels", per_split=24)
        return {"source": source, "root": str(root / "mimic-cxr-jpg"), "options": {"labels": str(root / "labels")}}
    if source == "csv":
        write_csv_dataset(root, per_split=20)
        return {"source": source, "root": str(root)}
    if source == "medmnist":
        write_medmnist(root, size=28, per_split=30)
        return {"source": source, "root": str(root)}
    raise ValueError(f"unknown source {source!r}")


def tiny_params(source: str, data: dict[str, Any], seeds=SEEDS, levels=LEVELS, methods=("l1", "random")) -> Params:
    return from_dict({
        "seeds": list(seeds),
        "data": {"name": f"fixture-{source}", "image_size": 32, "workers": 1, **data},
        "train": {"arch": "resnet10", "epochs": 2, "patience": 1, "batch_size": 32, "threads": 1, "device": "cpu"},
        "prune": {"methods": list(methods), "levels": list(levels), "batch_size": 256},
        "evaluate": {"test": "ttest"},
        "analyze": {"pie_sparsity": 0.9},
        "mlflow": {"experiment": f"sources-{source}"},
    })


def run_source_pipeline(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch | None = None,
                        seeds=SEEDS, levels=LEVELS) -> dict[str, Any]:
    """Fixture dataset of ``source`` -> every stage in-process; returns params and outputs.

    Returns ``{"params", "workdir", "meta", "evaluate", "summary", "predictions"}`` (the
    last: seed -> prediction table). chdir, MLFLOW_TRACKING_URI and the DVC variables are
    restored afterwards (through ``monkeypatch`` when given).
    """
    from cxrprune.stages import analyze, evaluate, prepare, prune, train

    if monkeypatch is None:
        with pytest.MonkeyPatch.context() as mp:
            return run_source_pipeline(tmp_path, source, mp, seeds, levels)
    tmp_path = Path(tmp_path)
    data = write_fixture(source, tmp_path / "raw" / source)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for var in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    params = tiny_params(source, data, seeds, levels)

    prepare.run(params)
    for seed in params.seeds:
        train.run(params, seed=seed)
        prune.run(params, seed=seed)
    evaluate.run(params)
    analyze.run(params)

    name = params.data.name
    return {
        "params": params,
        "workdir": work,
        "meta": load_meta(params.data.prepared_dir),
        "evaluate": json.loads((work / "metrics" / name / "evaluate.json").read_text()),
        "summary": json.loads((work / "metrics" / name / "summary.json").read_text()),
        "predictions": {s: pd.read_parquet(work / "data" / "predictions" / name / f"seed-{s}.parquet")
                        for s in params.seeds},
    }


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_whole_pipeline_runs_on_each_source(tmp_path, monkeypatch, source):
    result = run_source_pipeline(tmp_path, source, monkeypatch)
    meta, params = result["meta"], result["params"]
    assert meta["source"] == source and meta["image_size"] == 32
    n_test = meta["counts"]["test"]
    for table in result["predictions"].values():
        assert len(table) == n_test * len(LEVELS) * 2
        assert list(table.columns) == ["image_id", "method", "sparsity", *meta["classes"]]
    assert result["evaluate"]["map_dense"] is not None and 0 < result["evaluate"]["map_dense"] <= 1
    summary = result["summary"]
    assert summary["pie"]["n_images"] == n_test and summary["pie"]["count"] >= 1
    assert summary["fcd"]["n_pairs"] == len(meta["classes"]) * (len(meta["classes"]) - 1) // 2
    name = params.data.name
    work = result["workdir"]
    per_class = pd.read_csv(work / "metrics" / name / "per_class.csv")
    assert set(per_class["class_name"]) == set(meta["classes"]) and set(per_class["seed"]) == set(SEEDS)
    assert (work / "plots" / name / "figures" / "forgettability_curves.png").is_file()
