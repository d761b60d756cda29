"""The prediction-table contract: built, written, read and checked here, and nowhere else.

``data/predictions/<name>/seed-<s>.parquet`` (one per seed, the ``prune@<seed>`` output):
``image_id`` (str), ``method`` (str), ``sparsity`` (float64: the method's level), then one
float32 probability column per class in the canonical order. Rows are one block per
configured method and each of its levels (``method_levels(method, prune.levels)``: the
configured levels, or ``[0.0]`` for int8/fp16/bf16), each block listing the test images in
the order of ``labels_test.parquet``. Every consumer (evaluate, analyze, log-mlflow, the
importer of published predictions) goes through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cxrprune.compression.methods import method_levels
from cxrprune.core import upstream
from cxrprune.core.atomic import write_parquet
from cxrprune.core.config import Params
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer

# Sparsities are compared with this tolerance: levels are floats written by another stage
# (0.1 + 0.2 must still match 0.3); the configured levels are 0.05 apart.
LEVEL_TOLERANCE = 1e-9
BLOCK_KEYS = ["method", "sparsity"]


@dataclass
class LevelResult:
    """The predictions of one compressed model: one block of the table."""

    method: str
    sparsity: float
    measured_sparsity: float
    probs: np.ndarray  # (N, C) float32


def same_level(sparsity, level):
    """Where ``sparsity`` (a level, or an array of them) is ``level`` (or the level at the
    same place), within :data:`LEVEL_TOLERANCE`."""
    return np.isclose(sparsity, level, rtol=0, atol=LEVEL_TOLERANCE)


def select_block(table: pd.DataFrame, method: str, level: float) -> pd.DataFrame:
    """The rows of ``method`` at ``level`` of a table keyed by :data:`BLOCK_KEYS` (a
    prediction table), in table order, index reset."""
    rows = (table["method"].to_numpy() == method) & same_level(table["sparsity"].to_numpy(), level)
    return table.loc[rows].reset_index(drop=True)


def columns(classes: Sequence[str]) -> list[str]:
    return ["image_id", "method", "sparsity", *classes]


def n_blocks_of(methods: Sequence[str], levels: Sequence[float]) -> int:
    """How many (method, level) blocks a table of ``methods`` at ``levels`` holds."""
    return sum(len(method_levels(m, levels)) for m in methods)


def write_predictions(path, results: list[LevelResult], image_ids: list[str], classes: list[str]) -> None:
    """Build the table of ``results`` and write it atomically."""
    write_parquet(path, predictions_table(results, image_ids, classes))

def read_predictions(params: Params, seed: int, test_ids: Sequence[str], classes: list[str]) -> pd.DataFrame:
    """``data/predictions/<name>/seed-<s>.parquet``, checked against the contract
    (:func:`check_predictions`); a missing or damaged table is a :class:`DataError` that
    says which stage to rerun."""
    path = params.layout.predictions_file(seed)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro {producer('predictions_file', seed)}` first")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataError(f"{path}: damaged, not a readable parquet file ({type(exc).__name__}); "
                        f"rerun `dvc repro {producer('predictions_file', seed)} --force`") from None
    check_predictions(table, str(path), test_ids, classes, params.prune.methods, params.prune.levels,
                      fix=f"rerun `dvc repro {producer('predictions_file', seed)} --force`")
    return table


def check_predictions(table: pd.DataFrame, where: str, test_ids: Sequence[str], classes: list[str],
                      methods: Sequence[str], levels: Sequence[float],
                      fix: str = f"rerun `dvc repro {producer('predictions_file')}`") -> None:
    """The prediction-table contract: columns ``image_id, method, sparsity, <classes>``
    (float64 sparsity, float32 probabilities), test images x methods x levels rows, one
    block per configured (method, level) listing the test images in order, and every
    probability a finite number in [0, 1]."""
    expected = ["image_id", "method", "sparsity", *classes]
    if list(table.columns) != expected:
        cols = [str(c) for c in table.columns]
        missing = [c for c in expected if c not in cols]
        extra = [c for c in cols if c not in expected]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise DataError(f"{where}: columns differ from image_id, method, sparsity and the {len(classes)} classes "
                        f"(missing {missing[:5]}, unexpected {extra[:5]}, duplicated {dup[:5]}"
                        f"{', or out of order' if not (missing or extra or dup) else ''}); {fix}")
    n_test, n_blocks = len(test_ids), n_blocks_of(methods, levels)
    if len(table) != n_test * n_blocks:
        raise DataError(f"{where}: {len(table)} rows, expected {n_test * n_blocks} = {n_test} test images x "
                        f"{n_blocks} (method, level) blocks ({', '.join(methods)} x {len(levels)} level(s); "
                        f"one level for int8/fp16/bf16); truncated or stale, {fix}")
    if table["sparsity"].dtype != np.float64 or not all(table[c].dtype == np.float32 for c in classes):
        wrong = [f"{c} {table[c].dtype}" for c in ("sparsity", *classes)
                 if table[c].dtype != (np.float64 if c == "sparsity" else np.float32)]
        raise DataError(f"{where}: expected float64 sparsity and float32 probabilities, found {wrong[:3]}; {fix}")
    probs = table[classes].to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~((probs >= 0) & (probs <= 1))  # NaN fails both
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise DataError(f"{where}: probability {probs[row, col].item()!r} of class {classes[col]!r} in row {row} "
                        f"is not a finite number in [0, 1]; {fix}")
    ids = np.asarray([str(i) for i in test_ids], dtype=object)
    method = table["method"].astype(str).to_numpy()
    sparsity = table["sparsity"].to_numpy()
    image_id = table["image_id"].astype(str).to_numpy()
    for m in methods:
        for k in method_levels(m, levels):
            rows = np.flatnonzero((method == m) & same_level(sparsity, k))
            if len(rows) != n_test or not np.array_equal(image_id[rows], ids):
                raise DataError(f"{where}: the block {m}@{k:g} has {len(rows)} row(s) that are not the {n_test} test "
                                f"images in order; {fix}")


def results_from_table(table: pd.DataFrame, classes: list[str]) -> list[LevelResult]:
    """A checked prediction table as :class:`LevelResult` blocks (the measured sparsity is
    not in the table: NaN, which MLflow logging skips)."""
    out = []
    for (method, k), block in table.groupby(["method", "sparsity"], sort=False):
        out.append(LevelResult(str(method), float(k), float("nan"), block[classes].to_numpy(np.float32)))
    return out


def predictions_table(results: list[LevelResult], image_ids: list[str], classes: list[str]) -> pd.DataFrame:
    """The contract table: image_id, method, sparsity, one float32 column per class."""
    n = len(image_ids)
    blocks = [pd.DataFrame({
        "image_id": pd.Series(image_ids, dtype=str),
        "method": pd.Series([r.method] * n, dtype=str),
        "sparsity": np.full(n, r.sparsity, dtype=np.float64),
    }) for r in results]
    meta = pd.concat(blocks, ignore_index=True)
    probs = pd.DataFrame(np.concatenate([r.probs for r in results]).astype(np.float32), columns=classes)
    return pd.concat([meta, probs], axis=1)


def read_blocks(params: Params, seed: int, method: str, levels: Sequence[float], classes: list[str],
                n_test: int) -> list[pd.DataFrame]:
    """The rows of ``method`` at each of ``levels`` from one seed's table, in that order;
    only those rows are read (the analyses need 2 of 40 blocks). The footer's row count and
    columns are checked against the contract (evaluate checks every value)."""
    path = params.layout.predictions_file(seed)
    tol = LEVEL_TOLERANCE
    filters = [[("method", "=", method), ("sparsity", ">=", k - tol), ("sparsity", "<=", k + tol)] for k in levels]
    cols = columns(classes)
    fix = f"rerun `dvc repro {producer('predictions_file', seed)} --force`"
    try:
        table = pq.read_table(path, columns=cols, filters=filters).to_pandas()
        meta = pq.read_metadata(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {producer('predictions_file', seed)}` first") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/KeyError for a bad file or column
        raise DataError(f"{path}: unreadable or lacks columns ({type(exc).__name__}: {exc}); {fix}") from None
    n_rows = n_blocks_of(params.prune.methods, params.prune.levels) * n_test
    names = meta.schema.to_arrow_schema().names
    if meta.num_rows != n_rows or names != cols:
        raise DataError(f"{path}: {meta.num_rows} rows and columns {names[:4]}..., expected {n_rows} rows "
                        f"(test images x (method, level) blocks) and {cols[:4]}...; {fix}")
    out = []
    for k in levels:
        rows = table.loc[same_level(table["sparsity"].to_numpy(), k)]
        if rows.empty:
            raise DataError(f"{path}: no {method} predictions at sparsity {k:g}; {fix}")
        out.append(rows.reset_index(drop=True))
    return out


def read_level_blocks(path, image_ids: Sequence[str], classes: list[str], method: str, levels: Sequence[float],
                      producer: str) -> list[pd.DataFrame]:
    """A one-method prediction table of a study stage (``producer``, as ``dvc repro`` names
    it), checked against the prediction-table contract for these images; its blocks in
    ``levels`` order."""
    table = upstream.read_parquet(path, producer)
    check_predictions(table, str(path), image_ids, classes, [method], levels,
                      fix=f"rerun `dvc repro {producer} --force`")
    s = table["sparsity"].to_numpy()
    return [table.loc[same_level(s, k)].reset_index(drop=True) for k in levels]
