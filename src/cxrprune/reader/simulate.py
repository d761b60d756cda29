"""Simulated readers: answers derived from the synthetic ground truth, plus noise.

The synthetic generator knows, per image, whether one label was flipped and how degraded
the image is (``quality`` in [0, 1], 1 = pristine). A simulated reader with its own leniency
and bias answers every case of every form:

* agree: P(yes) = sigmoid(2.2 + b - 3.2 flipped - 1.5 (1 - quality)): a wrong label is
  usually noticed, a poor image makes the reader less sure;
* quality: round(1.3 + 3.4 quality + e), e ~ N(bias, 0.6), clipped to 1..5;
* difficulty: round(1.4 + 0.45 min(findings, 4) + 1.8 (1 - quality) + 0.6 flipped + e),
  clipped to 1..5 (more findings and poorer images are harder);
* seconds: log-normal around 15 s, longer for harder cases.

The files are written in the page's CSV export format, so the analysis reads simulated and
real readers through the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrprune.core.classes import NO_FINDING
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer

TRUTH_COLUMNS = ("image_id", "flipped", "quality")


def reader_ids(n: int) -> list[str]:
    return [f"sim-{r}" for r in range(1, n + 1)]


def case_truth(key: pd.DataFrame, manifest: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per case: form, position, study, flipped, quality and the number of findings shown."""
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise DataError(f"truth table lacks {missing}; the simulated readers need the synthetic ground truth")
    t = truth.assign(image_id=truth["image_id"].astype(str)).drop_duplicates("image_id").set_index("image_id")
    cases = key.merge(manifest[["case_id", "labels", "study"]], on="case_id", how="left")
    absent = sorted(set(cases["image_id"].astype(str)) - set(t.index))
    if absent:
        raise DataError(f"the truth table lacks {len(absent)} sampled image(s) (e.g. {absent[:3]}); "
                        f"rerun `dvc repro {producer('prepared')}` and `{producer('reader_key')}`")
    cases["flipped"] = cases["image_id"].astype(str).map(t["flipped"]).astype(float).clip(0, 1)
    cases["quality"] = cases["image_id"].astype(str).map(t["quality"]).astype(float).clip(0, 1)
    cases["findings"] = cases["labels"].fillna("").map(
        lambda s: sum(1 for x in str(s).split("|") if x and x != NO_FINDING))
    return cases.sort_values(["form", "position"]).reset_index(drop=True)


def simulate_reader(cases: pd.DataFrame, reader_id: str, rng: np.random.Generator) -> pd.DataFrame:
    """One simulated reader's answers to every case, in the page's export columns."""
    n = len(cases)
    flipped = cases["flipped"].to_numpy()
    quality = cases["quality"].to_numpy()
    findings = np.minimum(cases["findings"].to_numpy(), 4)
    leniency = rng.normal(0.0, 0.4)
    q_bias = rng.normal(0.0, 0.3)
    d_bias = rng.normal(0.0, 0.3)
    logit = 2.2 + leniency - 3.2 * flipped - 1.5 * (1 - quality)
    agree = rng.random(n) < 1 / (1 + np.exp(-logit))
    qual = np.clip(np.rint(1.3 + 3.4 * quality + rng.normal(q_bias, 0.6, n)), 1, 5).astype(int)
    diff = np.clip(np.rint(1.4 + 0.45 * findings + 1.8 * (1 - quality) + 0.6 * flipped
                           + rng.normal(d_bias, 0.6, n)), 1, 5).astype(int)
    seconds = np.round(np.exp(rng.normal(np.log(15.0) + 0.12 * diff, 0.35, n)), 1)
    stamp = pd.Timestamp("2024-01-01T09:00:00Z") + pd.to_timedelta(np.cumsum(seconds), unit="s")
    return pd.DataFrame({
        "form": cases["form"].astype(int).to_numpy(), "study": cases["study"].to_numpy(),
        "reader_id": reader_id, "case_id": cases["case_id"].to_numpy(),
        "position": cases["position"].astype(int).to_numpy(),
        "agree": np.where(agree, "yes", "no"), "quality": qual, "difficulty": diff, "seconds": seconds,
        "answered_at": [t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in stamp],
    })


def simulate(cases: pd.DataFrame, n_readers: int, seed: int) -> dict[str, pd.DataFrame]:
    """``{file name: answers}``: each simulated reader completes every form."""
    out = {}
    for r, rid in enumerate(reader_ids(n_readers), start=1):
        rng = np.random.default_rng([seed, 7919, r])
        answers = simulate_reader(cases, rid, rng)
        for form, rows in answers.groupby("form", sort=True):
            out[f"{rid}-form-{int(form)}.csv"] = rows.reset_index(drop=True)
    return out
