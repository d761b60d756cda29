"""Reading another stage's output: a missing file says which stage writes it, a damaged one
which stage to rerun, in one ``DataError`` line (never a pandas or pyarrow traceback).

``stage`` is the ``dvc repro`` target that writes the file (``evaluate``, ``prune@3``); by
default the one :mod:`cxrprune.core.layout` says writes ``path``, so no reader types it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer_of


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stage(path: Path, stage: str | None) -> str:
    if stage is not None:
        return stage
    found = producer_of(path)
    if found is None:  # a reader's mistake, not the user's: every stage output is a Layout entry
        raise ValueError(f"{path}: no stage in cxrprune.core.layout writes it; pass stage=")
    return found


def read_csv(path: str | os.PathLike, stage: str | None = None, **kwargs: Any) -> pd.DataFrame:
    path = Path(path)
    stage = _stage(path, stage)
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {stage}` first") from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({_first_line(exc)}); rerun `dvc repro {stage} --force`") from None


def read_level_table(path: str | os.PathLike, stage: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`read_csv` of a table with a compression-level column (``per_class.csv``,
    ``map_by_seed.csv``, ``map_vs_sparsity.csv``...). Tables written before the column was
    named ``level`` everywhere (issue 21) call it ``sparsity``; they are read with it renamed,
    here and only here, so an old workspace's outputs still feed the next stage without a rerun
    (``level`` is the word: int8/fp16/bf16 have one level, 0.0, which is no sparsity)."""
    table = read_csv(path, stage, **kwargs)
    if "sparsity" in table.columns and "level" not in table.columns:
        table = table.rename(columns={"sparsity": "level"})
    return table


def read_json(path: str | os.PathLike, stage: str | None = None) -> dict:
    path = Path(path)
    stage = _stage(path, stage)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {stage}` first") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({_first_line(exc)}); rerun `dvc repro {stage} --force`") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: damaged (not a JSON object); rerun `dvc repro {stage} --force`")
    return doc


def read_parquet(path: str | os.PathLike, stage: str | None = None, **kwargs: Any) -> pd.DataFrame:
    path = Path(path)
    stage = _stage(path, stage)
    try:
        return pd.read_parquet(path, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro {stage}` first") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataError(f"{path}: damaged, not a readable parquet file ({type(exc).__name__}); "
                        f"rerun `dvc repro {stage} --force`") from None
