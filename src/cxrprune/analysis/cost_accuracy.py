"""Measured efficiency of the compressed models, joined with their accuracy.

The prune stage of every seed measures the models it produced and writes
``data/predictions/<name>/efficiency-seed-<s>.csv`` (``seed,method,level,nonzero_params,
bytes,engine,threads,latency_ms_b1,latency_ratio,latency_ratio_lo,latency_ratio_hi,images_per_s_b64``: one row per (method, level) plus
``method=dense, level=0`` for the unpruned fp32 model; latency and throughput only for the
first seed, NaN for the others, since they do not depend on the seed). Here those files are
checked and stacked into ``metrics/<name>/efficiency.csv``, each row joined with the accuracy
of the same model (``map`` and ``worst_class_rel_dap`` of that seed), and reduced to one
point per (method, level) for the Pareto figure: the accuracy/size/speed trade-off of every
method. Nothing is computed from a nominal level: size and speed are what prune measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrprune.analysis.evaluate import map_table
from cxrprune.analysis.operating_points import LEVEL_DECIMALS as _ROUND
from cxrprune.analysis.operating_points import relative_to_dense
from cxrprune.core import upstream
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer

EFFICIENCY_COLUMNS = ["seed", "method", "level", "nonzero_params", "bytes", "engine", "threads", "latency_ms_b1",
                      "latency_ratio", "latency_ratio_lo", "latency_ratio_hi", "images_per_s_b64"]
LATENCY_RATIO = ["latency_ratio", "latency_ratio_lo", "latency_ratio_hi"]
JOINED_COLUMNS = [*EFFICIENCY_COLUMNS, "map", "worst_class_rel_dap"]
PARETO_COLUMNS = ["method", "level", "label", "latency_ms_b1", *LATENCY_RATIO, "images_per_s_b64", "bytes",
                  "megabytes", "nonzero_params", "map", "worst_class_rel_dap", "engine"]
DENSE = "dense"  # the efficiency row of the unpruned fp32 model; its accuracy is l1 at 0
_NUMERIC = ["nonzero_params", "bytes", "threads", "latency_ms_b1", *LATENCY_RATIO, "images_per_s_b64"]


def read_efficiency(files: Mapping[int, os.PathLike | str]) -> pd.DataFrame:
    """The per-seed efficiency files stacked in seed order, each checked (columns, its own
    seed, one row per (method, level), sizes positive, speeds positive where measured).

    No file at all gives an empty table: predictions imported from the authors come without
    models, so there is nothing to measure (the Pareto figure then says so). Some seeds with
    a file and others without is a stale prune output: a :class:`DataError` naming the stage.
    """
    paths = {int(s): Path(p) for s, p in files.items()}
    present = {s: p for s, p in paths.items() if p.is_file()}
    if not present:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in EFFICIENCY_COLUMNS})
    missing = [s for s in paths if s not in present]
    if missing:
        s = missing[0]
        raise DataError(f"{paths[s]}: not found while other seeds have one; "
                        f"run `dvc repro {producer('efficiency_file', s)}`")
    tables = []
    for seed, path in present.items():
        table = upstream.read_csv(path, producer('efficiency_file', seed))
        check_efficiency(table, str(path), seed, f"rerun `dvc repro {producer('efficiency_file', seed)} --force`")
        tables.append(table[EFFICIENCY_COLUMNS])
    return pd.concat(tables, ignore_index=True)


def check_efficiency(table: pd.DataFrame, where: str, seed: int, fix: str) -> None:
    """The efficiency-file contract of one seed (see the module docstring)."""
    if list(table.columns) != EFFICIENCY_COLUMNS:
        raise DataError(f"{where}: columns {list(table.columns)}, expected {','.join(EFFICIENCY_COLUMNS)}; {fix}")
    for col in ["seed", "level", *_NUMERIC]:
        if not pd.api.types.is_numeric_dtype(table[col]):
            raise DataError(f"{where}: column {col!r} must be numeric; {fix}")
    if table.empty:
        raise DataError(f"{where}: no rows; {fix}")
    if (table["seed"] != seed).any():
        raise DataError(f"{where}: column 'seed' holds {sorted(set(table['seed']))}, expected only {seed}; {fix}")
    keys = table.assign(level=np.round(table["level"].to_numpy(np.float64), _ROUND))
    if keys.duplicated(["method", "level"]).any():
        row = keys[keys.duplicated(["method", "level"])].iloc[0]
        raise DataError(f"{where}: two rows for {row['method']}@{row['level']:g}; {fix}")
    if not (table["method"] == DENSE).any():
        raise DataError(f"{where}: no row for the dense model (method {DENSE!r}); {fix}")
    for col in ("nonzero_params", "bytes"):
        v = table[col].to_numpy(np.float64)
        if not (np.isfinite(v) & (v > 0)).all():
            raise DataError(f"{where}: column {col!r} must hold positive numbers (measured on the artifact); {fix}")
    for col in ("latency_ms_b1", *LATENCY_RATIO, "images_per_s_b64"):
        v = table[col].to_numpy(np.float64)
        if (np.isfinite(v) & (v <= 0)).any() or np.isinf(v).any():
            raise DataError(f"{where}: column {col!r} must be positive where measured (NaN where not); {fix}")


def check_blocks(efficiency: pd.DataFrame, method_levels: Mapping[str, Sequence[float]]) -> None:
    """Every seed's efficiency rows cover exactly the (method, level) blocks evaluated (plus
    the dense row), so the Pareto figure cannot silently lose or invent a model."""
    if efficiency.empty:
        return
    want = {(m, round(float(k), _ROUND)) for m, levels in method_levels.items() for k in levels} | {(DENSE, 0.0)}
    for seed, rows in efficiency.groupby("seed", sort=True):
        got = {(str(m), round(float(k), _ROUND)) for m, k in zip(rows["method"], rows["level"])}
        if got != want:
            extra, lacking = sorted(got - want), sorted(want - got)
            raise DataError(f"efficiency of seed {seed}: (method, level) rows differ from the evaluated blocks "
                            f"(missing {lacking[:3]}, unexpected {extra[:3]}); "
                            f"rerun `dvc repro {producer('efficiency_file', seed)}`")


def join_accuracy(efficiency: pd.DataFrame, per_class: pd.DataFrame) -> pd.DataFrame:
    """``efficiency`` with the same model's ``map`` and ``worst_class_rel_dap`` (the
    smallest relative AP change over classes, that seed) appended; the dense row gets the
    dense model's mAP and 0."""
    maps = map_table(per_class)
    maps = maps.assign(level=np.round(maps["level"].to_numpy(np.float64), _ROUND))
    worst = (relative_to_dense(per_class).groupby(["seed", "method", "level"])["rel_dap"].min()
             .rename("worst_class_rel_dap").reset_index())
    dense = maps[(maps["method"] == DENSE_REFERENCE.method) & (maps["level"] == DENSE_REFERENCE.level)]
    acc = pd.concat([
        maps[["seed", "method", "level", "map"]],
        dense.assign(method=DENSE)[["seed", "method", "level", "map"]],
    ], ignore_index=True).merge(worst, on=["seed", "method", "level"], how="left")
    acc.loc[(acc["method"].isin([DENSE, DENSE_REFERENCE.method])) & (acc["level"] == DENSE_REFERENCE.level),
            "worst_class_rel_dap"] = 0.0
    eff = efficiency.assign(level=np.round(efficiency["level"].to_numpy(np.float64), _ROUND),
                            method=efficiency["method"].astype(str))
    joined = eff.merge(acc, on=["seed", "method", "level"], how="left", validate="1:1")
    return joined[JOINED_COLUMNS].sort_values(["seed", "method", "level"], kind="stable").reset_index(drop=True)


def pareto_table(per_class: pd.DataFrame, joined: pd.DataFrame) -> pd.DataFrame:
    """One point per (method, level) and the dense model: medians over seeds of mAP, bytes
    and non-zero parameters, latency and throughput of the measured seed, and the
    worst class's median relative AP change (the minimum over classes of the forgettability
    curve's point). Without efficiency measurements the size and speed columns are NaN."""
    maps = map_table(per_class)
    maps = maps.assign(level=np.round(maps["level"].to_numpy(np.float64), _ROUND))
    acc = maps.groupby(["method", "level"])["map"].median().rename("map").reset_index()
    dense_map = acc.loc[(acc["method"] == DENSE_REFERENCE.method) & (acc["level"] == DENSE_REFERENCE.level), "map"]
    acc = pd.concat([acc, pd.DataFrame({"method": [DENSE], "level": [DENSE_REFERENCE.level],
                                        "map": dense_map.to_numpy()[:1]})],
                    ignore_index=True)
    rel = relative_to_dense(per_class)
    worst = (rel.groupby(["method", "level", "class_name"])["rel_dap"].median()
             .groupby(["method", "level"]).min().rename("worst_class_rel_dap").reset_index())
    points = acc.merge(worst, on=["method", "level"], how="left")
    points.loc[points["method"].isin([DENSE, DENSE_REFERENCE.method]) & (points["level"] == DENSE_REFERENCE.level),
               "worst_class_rel_dap"] = 0.0
    if joined.empty:
        for col in ("latency_ms_b1", *LATENCY_RATIO, "images_per_s_b64", "bytes", "nonzero_params"):
            points[col] = np.nan
        points["engine"] = ""
    else:
        g = joined.groupby(["method", "level"])
        eff = pd.DataFrame({
            "latency_ms_b1": g["latency_ms_b1"].median(),  # NaN rows (unmeasured seeds) are skipped
            **{col: g[col].median() for col in LATENCY_RATIO},  # the timed seed's (one per point)
            "images_per_s_b64": g["images_per_s_b64"].median(),
            "bytes": g["bytes"].median(),
            "nonzero_params": g["nonzero_params"].median(),
            "engine": g["engine"].first(),
        }).reset_index()
        points = points.merge(eff, on=["method", "level"], how="left")
    points["megabytes"] = points["bytes"] / 1e6
    points["label"] = [f"{m}@{k:g}" for m, k in zip(points["method"], points["level"])]
    return points[PARETO_COLUMNS].sort_values(["method", "level"], kind="stable").reset_index(drop=True)


def _dtype(col: str) -> str:
    return {"seed": "int64", "method": "object", "engine": "object"}.get(col, "float64")
