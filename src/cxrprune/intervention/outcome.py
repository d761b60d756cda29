"""Each class's forgetting in the arm where it is rare against the arm where it is common.

Per arm (seeds pooled as the main study pools them, the median over seeds at each level):
the chance-corrected retained AUROC curve of every class,
``retained_k = (AUROC_k - 0.5) / (AUROC_0 - 0.5)`` (:mod:`cxrprune.analysis.chance_corrected`:
the form whose chance level does not depend on prevalence, which differs between the arms by
design), summarised by its mean over the compression levels (``retained``: 1 keeps everything,
0 is chance at every level) and by its first drop below ``1 - analyze.drop_threshold``.

The contrasts are within class, so everything a class is (size, contrast, co-occurrence, its
test positives) cancels; only the number of positives the loss saw differs:

- ``frequency``: ``retained(rare arm) - retained(common arm)``; the paper's claim, as a cause,
  is a negative mean: **this is the study's verdict**;
- ``first_drop``: the same for the first-drop level (classes whose curve never drops in one of
  the two arms are listed, not used);
- ``masking_control``: ``retained(common arm) - retained(control)``: the class is common in
  both, so a difference is what hiding *other* classes' positives does (the negative control);
- ``manipulation``: dense AUROC rare arm minus common arm: the intervention took effect.

Each is a sign-flip test over classes (:mod:`cxrprune.stats.signflip`: the class is the unit of
the claim; exact for any symmetric per-class noise) with the mean's t interval. Classes the
dense model did not learn in the rare or the common arm (dense AUROC interval containing 0.5:
retained is undefined near chance) are left out and listed with the reason.

What it cannot show: the rare arm's dense model is weaker for the class (that is what fewer
positives do), so "forgotten more when rare" cannot be split into "because it was rare" and
"because its dense model was weaker", which rarity causes; and it says nothing about how
classes that are rare in the real world differ from common ones beyond frequency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrprune.analysis import chance_corrected, forgetting
from cxrprune.intervention.arms import RARE_HALF
from cxrprune.stats.signflip import sign_flip_test

METHOD = "l1"
ALPHA = 0.05
FORGOTTEN_MORE, FORGOTTEN_LESS, NO_EFFECT, UNTESTED = (
    "rare forgotten more", "rare forgotten less", "no significant frequency effect",
    "not tested (fewer than 2 classes)")


def arm_summary(per_class: pd.DataFrame, test_labels: pd.DataFrame, classes: Sequence[str],
                threshold: float) -> pd.DataFrame:
    """Per class (index ``class_name``): ``dense_auroc`` (median over seeds) with its
    Hanley-McNeil interval, ``retained`` (mean over the levels of the retained-AUROC curve)
    and ``first_drop``; ``per_class`` is one arm's evaluate-style table (all its seeds)."""
    rel = forgetting.relative_change(per_class, METHOD, pd.Series(chance_corrected.AUROC_CHANCE, index=list(classes)),
                                     "auroc")
    curves = forgetting.forgettability_curves(rel, classes)
    dense = chance_corrected.dense_auroc(per_class, test_labels, classes, METHOD)
    return dense.assign(retained=(curves + 1.0).mean(axis=0), first_drop=forgetting.first_drop(curves, threshold))


def per_class_table(summaries: Mapping[str, pd.DataFrame], half: Mapping[str, str],
                    seen: Mapping[str, pd.Series], train_positives: pd.Series, test_positives: pd.Series
                    ) -> pd.DataFrame:
    """One row per class: its half, training positives seen in its rare and common arm, each
    arm's dense AUROC, retained and first drop, the contrasts, and ``excluded`` (the reason a
    class is left out of the contrasts, empty when it is in)."""
    rows = []
    for c, h in half.items():
        rare = next(a for a, rh in RARE_HALF.items() if rh == h)
        common = next(a for a, rh in RARE_HALF.items() if rh not in (h, None))
        r, m = summaries[rare].loc[c], summaries[common].loc[c]
        ctrl = summaries["control"].loc[c] if "control" in summaries else None
        if not test_positives[c] > 0:
            why = chance_corrected.NO_TEST
        elif not r["dense_auroc_lo"] > chance_corrected.AUROC_CHANCE:
            why = f"not learned in its rare arm {rare}: dense AUROC CI includes 0.5"
        elif not m["dense_auroc_lo"] > chance_corrected.AUROC_CHANCE:
            why = f"not learned in its common arm {common}: dense AUROC CI includes 0.5"
        else:
            why = ""
        row = {"class_name": c, "half": h, "rare_arm": rare, "common_arm": common,
               "train_positives": int(train_positives[c]), "seen_rare": int(seen[rare][c]),
               "seen_common": int(seen[common][c]), "test_positives": int(test_positives[c]),
               "dense_auroc_rare": r["dense_auroc"], "dense_auroc_common": m["dense_auroc"],
               "retained_rare": r["retained"], "retained_common": m["retained"],
               "first_drop_rare": r["first_drop"], "first_drop_common": m["first_drop"],
               "dense_auroc_control": np.nan if ctrl is None else ctrl["dense_auroc"],
               "retained_control": np.nan if ctrl is None else ctrl["retained"],
               "excluded": why}
        rows.append(row)
    t = pd.DataFrame(rows)
    t["d_retained"] = t["retained_rare"] - t["retained_common"]
    t["d_first_drop"] = t["first_drop_rare"] - t["first_drop_common"]
    t["d_control"] = t["retained_common"] - t["retained_control"]
    t["d_dense_auroc"] = t["dense_auroc_rare"] - t["dense_auroc_common"]
    return t


def contrasts(table: pd.DataFrame, *, draws: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """The four sign-flip tests over classes (module docstring), the verdict on ``frequency``,
    and every class left out of each with the reason."""
    ok = table["excluded"] == ""
    left_out = [{"class": c, "reason": r} for c, r in zip(table["class_name"], table["excluded"]) if r]
    not_reached = table.loc[ok & (table["first_drop_rare"].isna() | table["first_drop_common"].isna()), "class_name"]
    no_control = table.loc[ok & table["retained_control"].isna(), "class_name"]
    has_test = table["test_positives"] > 0
    out = {
        "frequency": sign_flip_test(table.loc[ok, "d_retained"], draws=draws, seed=seed).to_dict(),
        "first_drop": sign_flip_test(table.loc[ok, "d_first_drop"], draws=draws, seed=seed).to_dict(),
        "masking_control": sign_flip_test(table.loc[ok, "d_control"], draws=draws, seed=seed).to_dict(),
        "manipulation": sign_flip_test(table.loc[has_test, "d_dense_auroc"], draws=draws, seed=seed).to_dict(),
        "left_out": left_out,
        "first_drop_not_reached": [{"class": c, "reason": "retained AUROC never below the drop threshold in its "
                                    "rare or its common arm"} for c in not_reached],
        "control_missing": [{"class": c, "reason": "no control arm run"} for c in no_control],
    }
    out["verdict"] = verdict(out["frequency"])
    return out


def verdict(result: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """The frequency contrast's verdict: a negative mean at p <= alpha is the paper's claim as a cause."""
    if result.get("p") is None:
        return UNTESTED
    if result["p"] <= alpha:
        return FORGOTTEN_MORE if result["mean"] < 0 else FORGOTTEN_LESS
    return NO_EFFECT


def calibration(noise: Sequence[float], shifts: Sequence[float], *, replicates: int = 400, draws: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """How often the verdict says "rare forgotten more" when ``shift`` is planted on real
    between-arm noise: each replicate gives every class one of the ``noise`` values (the
    masking-control differences: two arms in which the class is common, so only training noise
    separates them) with a random sign, plus ``-shift``. ``shift`` 0 is the false-positive
    rate. It cannot show what the rare arm's larger noise (fewer positives) does."""
    e = np.asarray([v for v in noise if np.isfinite(v)], dtype=np.float64)
    if e.size < 2:
        return {"false_positive_rate": None, "power": {}, "replicates": 0}
    rng = np.random.default_rng(seed)
    rates = {}
    for shift in (0.0, *shifts):
        hits = 0
        for r in range(replicates):
            d = e * rng.choice((-1.0, 1.0), size=e.size) - shift
            res = sign_flip_test(d, draws=draws, seed=seed + 1 + r).to_dict()
            hits += verdict(res) == FORGOTTEN_MORE
        rates[float(shift)] = hits / replicates
    return {"false_positive_rate": rates[0.0], "power": {f"{k:g}": v for k, v in rates.items() if k != 0.0},
            "replicates": replicates, "classes": int(e.size),
            "how": "the masking-control differences with random signs, plus a planted loss of retained AUROC"}
