"""Draw the reader study's cases: per form, N PIEs and N non-PIEs, shuffled and blinded.

Each form gets ``per_group`` PIEs and as many non-PIEs, never the same image twice within a
form. When a group has fewer images than ``forms * per_group`` (the synthetic default has
about 45 PIEs for 6 x 20 slots), images are reused across forms as evenly as possible: each
draw takes the least-used images first, ties broken by the seeded generator.

With ``stratify`` the non-PIEs of a form are matched to its PIEs' findings: every image has
a stratum, its rarest positive label in the test set (``No Finding`` when it has none), and
each PIE's stratum is filled with a non-PIE of the same stratum, or any non-PIE when the
stratum has none left (counted in ``info["unmatched"]``).

Readers see a neutral case id per image (``manifest.csv``); which case is a PIE is kept in
``key.csv`` only, and nothing derived from it reaches a form's page.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrprune.core import upstream
from cxrprune.core.atomic import write_csv, write_json
from cxrprune.core.classes import NO_FINDING
from cxrprune.core.config import ReaderConfig
from cxrprune.core.errors import DataError
from cxrprune.core.layout import producer

MANIFEST_COLUMNS = ["form", "position", "case_id", "image_id", "labels", "study"]
KEY_COLUMNS = ["case_id", "form", "position", "image_id", "is_pie", "stratum"]
LABEL_SEPARATOR = "|"
_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: ids are read aloud and typed
_ID_LENGTH = 6


@dataclass
class Sample:
    manifest: pd.DataFrame  # what readers see: form, position, case_id, image_id, labels, study
    key: pd.DataFrame  # hidden: case_id, form, position, image_id, is_pie, stratum
    info: dict = field(default_factory=dict)


def load_pies(path: str | os.PathLike) -> pd.DataFrame:
    """``pies.csv`` of the analyze stage: ``image_id, spearman, is_pie`` (+ truth columns)."""
    path = Path(path)
    df = upstream.read_csv(path, producer('pies'), dtype={"image_id": str})
    missing = [c for c in ("image_id", "is_pie") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected image_id, spearman, is_pie")
    if df["image_id"].duplicated().any():
        dup = df["image_id"][df["image_id"].duplicated()].unique()[:3]
        raise DataError(f"{path}: duplicate image_id(s) {list(dup)}")
    values = df["is_pie"]
    if values.dtype == object:
        values = values.astype(str).str.strip().str.lower().map(
            {"true": 1, "false": 0, "1": 1, "0": 0})
    if values.isna().any() or not set(pd.unique(values)).issubset({0, 1, True, False}):
        raise DataError(f"{path}: is_pie must be 0/1 or true/false in every row")
    out = df.copy()
    out["is_pie"] = values.astype(bool)
    return out


def positive_labels(labels: pd.DataFrame, classes: list[str]) -> list[list[str]]:
    """Each row's positive classes in canonical order (``[No Finding]`` when there are none)."""
    values = labels[classes].to_numpy()
    out = []
    for row in values:
        found = [c for c, v in zip(classes, row) if v == 1]
        out.append(found or [NO_FINDING])
    return out


def strata(labels: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Each image's rarest positive finding in this table (``No Finding`` when none)."""
    findings = [c for c in classes if c != NO_FINDING]
    values = labels[findings].to_numpy().astype(bool) if findings else np.zeros((len(labels), 0), bool)
    freq = values.sum(axis=0)
    # rarest first; ties by canonical order (stable sort)
    order = np.argsort(freq, kind="stable")
    out = np.full(len(labels), NO_FINDING, dtype=object)
    for i, row in enumerate(values):
        for j in order:
            if row[j]:
                out[i] = findings[j]
                break
    return out


def study_id(form: int, case_ids: list[str]) -> str:
    """A short fingerprint of one form's cases in order; exports carry it to catch stale forms."""
    text = f"{form}:" + ",".join(case_ids)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def draw_sample(pies: pd.DataFrame, labels: pd.DataFrame, classes: list[str], cfg: ReaderConfig) -> Sample:
    """The blinded sample of ``cfg.forms`` forms of ``cfg.per_group`` PIEs + non-PIEs."""
    labels = labels.reset_index(drop=True)
    ids = labels["image_id"].astype(str).to_numpy()
    pie_of = dict(zip(pies["image_id"].astype(str), pies["is_pie"].astype(bool)))
    unknown = [i for i in ids if i not in pie_of]
    if unknown:
        raise DataError(f"pies.csv lacks {len(unknown)} test image(s) (e.g. {unknown[:3]}); "
                        f"rerun `dvc repro {producer('pies')}` after `{producer('prepared')}`")
    is_pie = np.array([pie_of[i] for i in ids], dtype=bool)
    stratum = strata(labels, classes)
    shown = positive_labels(labels, classes)
    pie_pool = np.flatnonzero(is_pie)
    non_pool = np.flatnonzero(~is_pie)
    n = cfg.per_group
    for name, pool in (("PIEs", pie_pool), ("non-PIEs", non_pool)):
        if len(pool) < n:
            raise DataError(f"the test set has {len(pool)} {name}, a form needs reader.per_group = {n}; "
                            f"lower reader.per_group (or raise analyze.pie_fraction)")

    rng = np.random.default_rng(cfg.seed)
    uses = np.zeros(len(ids), dtype=np.int64)
    unmatched = 0
    rows = []
    used_ids: set[str] = set()
    for form in range(1, cfg.forms + 1):
        chosen_pies = _least_used(pie_pool, n, uses, rng)
        in_form = set(chosen_pies.tolist())
        if cfg.stratify:
            chosen_non: list[int] = []
            need: dict[str, int] = {}
            for i in chosen_pies:
                need[stratum[i]] = need.get(stratum[i], 0) + 1
            short = 0
            for s in sorted(need):
                cands = non_pool[(stratum[non_pool] == s) & ~np.isin(non_pool, list(in_form))]
                take = _least_used(cands, min(need[s], len(cands)), uses, rng)
                chosen_non.extend(take.tolist())
                in_form.update(take.tolist())
                short += need[s] - len(take)
            if short:
                cands = non_pool[~np.isin(non_pool, list(in_form))]
                take = _least_used(cands, short, uses, rng)
                chosen_non.extend(take.tolist())
                unmatched += short
            chosen_non_arr = np.array(chosen_non, dtype=np.int64)
        else:
            chosen_non_arr = _least_used(non_pool, n, uses, rng)
        cases = np.concatenate([chosen_pies, chosen_non_arr])
        uses[cases] += 1
        cases = cases[rng.permutation(len(cases))]
        case_ids = [_new_id(rng, used_ids) for _ in cases]
        sid = study_id(form, case_ids)
        for pos, (i, cid) in enumerate(zip(cases, case_ids), start=1):
            rows.append({"form": form, "position": pos, "case_id": cid, "image_id": ids[i],
                         "labels": LABEL_SEPARATOR.join(shown[i]), "study": sid,
                         "is_pie": bool(is_pie[i]), "stratum": stratum[i]})
    table = pd.DataFrame(rows)
    info = {
        "forms": cfg.forms, "per_group": n, "cases": len(table), "seed": cfg.seed, "stratify": cfg.stratify,
        "pies_available": int(len(pie_pool)), "non_pies_available": int(len(non_pool)),
        "distinct_pies": int(table.loc[table["is_pie"], "image_id"].nunique()),
        "distinct_non_pies": int(table.loc[~table["is_pie"], "image_id"].nunique()),
        "max_uses_per_image": int(uses.max()), "unmatched": int(unmatched),
    }
    return Sample(manifest=table[MANIFEST_COLUMNS].reset_index(drop=True),
                  key=table[KEY_COLUMNS].reset_index(drop=True), info=info)


def _least_used(pool: np.ndarray, k: int, uses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``k`` images of ``pool``, the least used first, ties in seeded random order."""
    if k <= 0 or len(pool) == 0:
        return np.zeros(0, dtype=np.int64)
    tie = rng.random(len(pool))
    order = np.lexsort((tie, uses[pool]))
    return np.asarray(pool)[order[:k]].astype(np.int64)


def _new_id(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        cid = "".join(_ID_ALPHABET[j] for j in rng.integers(0, len(_ID_ALPHABET), _ID_LENGTH))
        if cid not in used:
            used.add(cid)
            return cid


def write_sample(sample: Sample, manifest: str | os.PathLike, key: str | os.PathLike,
                 info: str | os.PathLike) -> None:
    """The manifest (readers' view), the key (hidden) and the counts (JSON), where the
    layout puts them (``Layout.reader_manifest``, ``reader_key``, ``reader_sample_info``)."""
    table = sample.key.copy()
    table["is_pie"] = table["is_pie"].astype(int)
    write_csv(manifest, sample.manifest)
    write_csv(key, table)
    write_json(info, sample.info)


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    df = _read(path, producer('reader_key'))
    _need(df, path, MANIFEST_COLUMNS)
    return df


def load_key(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    df = _read(path, producer('reader_key'))
    _need(df, path, KEY_COLUMNS)
    if df["case_id"].duplicated().any():
        raise DataError(f"{path}: duplicate case ids; rerun `dvc repro {producer('reader_key')} --force`")
    df["is_pie"] = df["is_pie"].astype(int).astype(bool)
    return df


def _read(path: Path, stage: str) -> pd.DataFrame:
    return upstream.read_csv(path, stage, dtype={"case_id": str, "image_id": str, "labels": str, "study": str},
                             keep_default_na=False)


def _need(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; rerun `dvc repro {producer('reader_key')} --force`")
