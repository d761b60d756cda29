"""DVC stage ``reader-simulate``: simulated readers' answer files for the synthetic data."""

from __future__ import annotations

from cxrprune.core import upstream
from cxrprune.core.atomic import atomic_dir
from cxrprune.core.config import Params
from cxrprune.core.errors import DataError
from cxrprune.reader.answers import ANSWER_COLUMNS
from cxrprune.reader.sample import load_key, load_manifest
from cxrprune.reader.simulate import case_truth, simulate
from cxrprune.core.stage import Stage


STAGE = Stage(name="reader-simulate",
              help="simulated readers' answers from the synthetic ground truth")


def run(params: Params) -> None:
    cfg = params.reader
    out = params.layout.reader_simulated
    if not cfg.simulate:
        with atomic_dir(out) as tmp:
            (tmp / "README.txt").write_text("reader.simulate is false: no simulated readers.\n", encoding="utf-8")
        print(f"reader.simulate is false: no simulated readers -> {out}")
        return
    truth_path = params.layout.truth
    if not truth_path.is_file():
        raise DataError(f"{truth_path}: not found; simulated readers need the synthetic ground truth. "
                        f"For a real dataset set reader.simulate: false and collect real answers "
                        f"in {cfg.answers_dir}")
    truth = upstream.read_parquet(truth_path)
    cases = case_truth(load_key(params.layout.reader_key), load_manifest(params.layout.reader_manifest), truth)
    files = simulate(cases, cfg.simulated_readers, cfg.seed)
    with atomic_dir(out) as tmp:
        for name, df in files.items():
            df[ANSWER_COLUMNS].to_csv(tmp / name, index=False)
    print(f"{cfg.simulated_readers} simulated reader(s) answered {len(cases)} case(s) -> {out}")
