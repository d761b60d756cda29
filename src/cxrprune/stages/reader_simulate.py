"""DVC stage ``reader-simulate``: simulated readers' answer files for the synthetic data."""

from __future__ import annotations

import pandas as pd

from ..atomic import atomic_dir
from ..config import Params
from ..errors import DataError
from ..reader import study_dir
from ..reader.answers import ANSWER_COLUMNS
from ..reader.sample import load_key, load_manifest
from ..reader.simulate import case_truth, simulate


def run(params: Params) -> None:
    cfg = params.reader
    study = study_dir(params.data.name)
    out = study / "simulated"
    if not cfg.simulate:
        with atomic_dir(out) as tmp:
            (tmp / "README.txt").write_text("reader.simulate is false: no simulated readers.\n", encoding="utf-8")
        print(f"reader.simulate is false: no simulated readers -> {out}")
        return
    truth_path = params.data.prepared_dir / "truth.parquet"
    if not truth_path.is_file():
        raise DataError(f"{truth_path}: not found; simulated readers need the synthetic ground truth. "
                        f"For a real dataset set reader.simulate: false and collect real answers "
                        f"in {cfg.answers_dir}")
    try:
        truth = pd.read_parquet(truth_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{truth_path}: unreadable ({exc}); rerun `dvc repro prepare --force`") from None
    cases = case_truth(load_key(study / "key.csv"), load_manifest(study / "manifest.csv"), truth)
    files = simulate(cases, cfg.simulated_readers, cfg.seed)
    with atomic_dir(out) as tmp:
        for name, df in files.items():
            df[ANSWER_COLUMNS].to_csv(tmp / name, index=False)
    print(f"{cfg.simulated_readers} simulated reader(s) answered {len(cases)} case(s) -> {out}")
