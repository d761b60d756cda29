"""Read readers' exported answers, validate them and join them with the hidden key.

An answer file is what a form's page exports, or a spreadsheet saved in the same shape:

* **CSV**, one row per case, header ``form,study,reader_id,case_id,position,agree,quality,
  difficulty,seconds,answered_at``. Required: ``reader_id, case_id, agree, quality,
  difficulty``; ``form`` and ``study`` are checked against the forms when present.
* **JSON**, ``{"format": "cxr-reader-answers/1", "form", "study", "reader_id",
  "exported_at", "answers": [{"case_id", "position", "agree", "quality", "difficulty",
  "seconds", "answered_at"}, ...]}``; row fields override the top-level ones.

``agree`` is ``yes``/``no`` (also ``y/n``, ``1/0``, ``true/false``), ``quality`` and
``difficulty`` are integers 1..5, ``seconds`` a number >= 0; an empty cell is a question not
answered. Every problem is a :class:`DataError` naming the file and row, except these
recorded decisions (listed in the validation report):

* rows with none of the three answers (an unfinished form exported early) are dropped;
* a reader's answers to one case that appear more than once with the *same* answers (the CSV
  and the JSON export of one session, a file copied twice) are kept once, with the most time;
* the same reader's *different* answers to one case are an error, unless
  ``reader.duplicates: latest`` keeps the answer with the latest ``answered_at``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from cxrprune.core.errors import DataError

FORMAT = "cxr-reader-answers/1"
QUESTIONS = ("agree", "quality", "difficulty")
QUESTION_TEXT = {
    "agree": "Do you fully agree with the label?",
    "quality": "Image quality",
    "difficulty": "Diagnosis difficulty",
}
QUESTION_SCALE = {
    "agree": "0 = no, 1 = yes",
    "quality": "1 = poor .. 5 = excellent",
    "difficulty": "1 = very easy .. 5 = very difficult",
}
ANSWER_COLUMNS = ["form", "study", "reader_id", "case_id", "position", "agree", "quality", "difficulty",
                  "seconds", "answered_at"]
REQUIRED_COLUMNS = ["reader_id", "case_id", "agree", "quality", "difficulty"]
RATING_COLUMNS = ["reader_id", "source", "form", "case_id", "image_id", "is_pie", "agree", "quality",
                  "difficulty", "seconds", "answered_at", "file"]
_AGREE = {"yes": 1, "y": 1, "1": 1, "true": 1, "no": 0, "n": 0, "0": 0, "false": 0}
_MAX_ERRORS_SHOWN = 5


def find_answer_files(folder: str | os.PathLike) -> list[Path]:
    """Every ``*.csv`` and ``*.json`` under ``folder`` (recursively, hidden names skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in (".csv", ".json"):
            out.append(path)
    return out


def read_answer_file(path: str | os.PathLike) -> pd.DataFrame:
    """One file's rows as strings in :data:`ANSWER_COLUMNS` (+ ``file``, ``row``)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        df = _read_json(path)
        first_row = 1
    else:
        df = _read_csv(path)
        first_row = 2  # header is line 1
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; an answer file needs "
                        f"{', '.join(REQUIRED_COLUMNS)} (see reader_answers/README.md)")
    for col in ANSWER_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    df = df[ANSWER_COLUMNS].copy()
    for col in ANSWER_COLUMNS:
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip())
    df["file"] = str(path)
    df["row"] = np.arange(first_row, first_row + len(df))
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; export the answers again from the form") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV answer file ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _read_json(path: Path) -> pd.DataFrame:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON answer file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("answers"), list):
        raise DataError(f"{path}: a JSON answer file is an object with an \"answers\" list "
                        f"(format {FORMAT})")
    if doc.get("format", FORMAT) != FORMAT:
        raise DataError(f"{path}: unknown format {doc.get('format')!r}; expected {FORMAT}")
    top = {k: doc[k] for k in ("form", "study", "reader_id") if k in doc}
    rows = []
    for i, item in enumerate(doc["answers"], start=1):
        if not isinstance(item, dict):
            raise DataError(f"{path}: answers[{i - 1}] is not an object")
        rows.append({**top, **item})
    if not rows:
        return pd.DataFrame(columns=ANSWER_COLUMNS)
    return pd.DataFrame(rows)


def load_answers(files: Iterable[tuple[str | os.PathLike, str]], key: pd.DataFrame,
                 manifest: pd.DataFrame, duplicates: str = "error") -> tuple[pd.DataFrame, dict]:
    """Validated ratings joined with the key, and an audit of what was read and decided (a dict).

    ``files`` are ``(path, source)`` pairs (``source``: ``simulated`` or ``real``). Returns
    one row per (reader, case) in :data:`RATING_COLUMNS`, with ``agree`` as 0/1 and the
    ratings as numbers (NaN where a question was left unanswered).
    """
    if duplicates not in ("error", "latest"):
        raise ValueError(f"duplicates must be 'error' or 'latest', got {duplicates!r}")
    frames = []
    audit: dict = {"files": 0, "rows_read": 0, "unanswered_rows_dropped": 0, "identical_duplicates_dropped": 0,
                   "conflicts_resolved": 0, "decisions": []}
    for path, source in files:
        df = read_answer_file(path)
        df["source"] = source
        frames.append(df)
        audit["files"] += 1
        audit["rows_read"] += len(df)
    if not frames:
        return pd.DataFrame(columns=RATING_COLUMNS), audit
    raw = pd.concat(frames, ignore_index=True)
    parsed = _parse(raw)
    _check_against_key(parsed, key, manifest)

    answered = parsed[["agree", "quality", "difficulty"]].notna().any(axis=1)
    dropped = parsed.loc[~answered]
    if len(dropped):
        audit["unanswered_rows_dropped"] = int(len(dropped))
        for f, n in dropped.groupby("file").size().items():
            audit["decisions"].append(f"{f}: {n} case(s) without any answer dropped (form not finished)")
    parsed = parsed.loc[answered].copy()
    parsed = _resolve_duplicates(parsed, duplicates, audit)

    k = key.set_index("case_id")
    parsed["image_id"] = parsed["case_id"].map(k["image_id"])
    parsed["is_pie"] = parsed["case_id"].map(k["is_pie"]).astype(bool)
    parsed["form"] = parsed["case_id"].map(k["form"]).astype(int)
    out = parsed[RATING_COLUMNS].sort_values(["reader_id", "form", "case_id"]).reset_index(drop=True)
    repeats = int(out.duplicated(["reader_id", "image_id"]).sum())
    audit["repeat_image_ratings"] = repeats
    if repeats:
        audit["decisions"].append(f"{repeats} rating(s) are of an image the same reader already rated under "
                                  f"another case id (images recur across forms); each rating counts")
    missing = {q: int(out[q].isna().sum()) for q in QUESTIONS}
    audit["ratings"] = int(len(out))
    audit["missing_answers"] = missing
    for q, n in missing.items():
        if n:
            audit["decisions"].append(f"{n} rating(s) lack an answer to '{q}'; left out of that question only")
    return out, audit


def _where(row: pd.Series) -> str:
    return f"{row['file']} row {row['row']}"


def _fail(problems: list[str], what: str) -> None:
    if problems:
        shown = "; ".join(problems[:_MAX_ERRORS_SHOWN])
        more = f" (and {len(problems) - _MAX_ERRORS_SHOWN} more)" if len(problems) > _MAX_ERRORS_SHOWN else ""
        raise DataError(f"{what}: {shown}{more}")


def _parse(raw: pd.DataFrame) -> pd.DataFrame:
    problems: list[str] = []
    agree, quality, difficulty, seconds = [], [], [], []
    for _, row in raw.iterrows():
        where = _where(row)
        if row["reader_id"] == "":
            problems.append(f"{where}: reader_id is empty")
        if row["case_id"] == "":
            problems.append(f"{where}: case_id is empty")
        a = row["agree"].lower()
        if a == "":
            agree.append(np.nan)
        elif a in _AGREE:
            agree.append(float(_AGREE[a]))
        else:
            agree.append(np.nan)
            problems.append(f"{where}: agree must be yes or no, got {row['agree']!r}")
        for col, sink in (("quality", quality), ("difficulty", difficulty)):
            v = _rating(row[col])
            if v is None:
                sink.append(np.nan)
                problems.append(f"{where}: {col} must be an integer from 1 to 5, got {row[col]!r}")
            else:
                sink.append(v)
        s = row["seconds"]
        if s == "":
            seconds.append(np.nan)
        else:
            try:
                sv = float(s)
            except ValueError:
                sv = -1.0
            if not math.isfinite(sv) or sv < 0:
                problems.append(f"{where}: seconds must be a number >= 0, got {s!r}")
            seconds.append(sv)
        if row["form"] != "" and not _is_int(row["form"]):
            problems.append(f"{where}: form must be a form number, got {row['form']!r}")
    _fail(problems, "invalid answers")
    out = raw.copy()
    out["agree"] = agree
    out["quality"] = quality
    out["difficulty"] = difficulty
    out["seconds"] = seconds
    return out


def _rating(text: str) -> float | None:
    """1..5 as a float, NaN for an empty cell, None when invalid."""
    if text == "":
        return np.nan
    try:
        v = float(text)
    except ValueError:
        return None
    if not v.is_integer() or not 1 <= v <= 5:
        return None
    return v


def _is_int(text: str) -> bool:
    try:
        return float(text).is_integer()
    except ValueError:
        return False


def _check_against_key(df: pd.DataFrame, key: pd.DataFrame, manifest: pd.DataFrame) -> None:
    form_of = dict(zip(key["case_id"], key["form"].astype(int)))
    study_of = {int(f): s for f, s in manifest.groupby("form")["study"].first().items()}
    problems = []
    for _, row in df.iterrows():
        cid = row["case_id"]
        if cid not in form_of:
            problems.append(f"{_where(row)}: unknown case id {cid!r}")
            continue
        form = form_of[cid]
        if row["form"] != "" and int(float(row["form"])) != form:
            problems.append(f"{_where(row)}: case {cid} belongs to form {form}, the file says form {row['form']}")
        if row["study"] != "" and row["study"] != study_of.get(form):
            problems.append(f"{_where(row)}: exported from another draw of form {form} (study {row['study']}, "
                            f"current {study_of.get(form)}); analyse it with the forms it was made from")
    _fail(problems, "answers do not match the current forms (data/reader/<name>/manifest.csv)")


def _resolve_duplicates(df: pd.DataFrame, duplicates: str, audit: dict) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    keep = np.ones(len(df), dtype=bool)
    problems = []
    answers = df[list(QUESTIONS)].fillna(-1.0)
    for (reader, cid), idx in df.groupby(["reader_id", "case_id"], sort=True).groups.items():
        idx = list(idx)
        if len(idx) == 1:
            continue
        distinct = answers.loc[idx].drop_duplicates()
        if len(distinct) == 1:  # the same answers more than once: keep the copy with the most time
            best = df.loc[idx, "seconds"].fillna(-1.0).idxmax()
            for i in idx:
                keep[i] = i == best
            audit["identical_duplicates_dropped"] += len(idx) - 1
            continue
        places = ", ".join(f"{_where(df.loc[i])} ({_answer_text(df.loc[i])})" for i in idx)
        if duplicates == "error":
            problems.append(f"reader {reader!r} answered case {cid} differently more than once: {places}")
            continue
        order = sorted(idx, key=lambda i: (df.loc[i, "answered_at"], i))
        latest = order[-1]
        for i in idx:
            keep[i] = i == latest
        audit["conflicts_resolved"] += 1
        audit["decisions"].append(f"reader {reader!r}, case {cid}: kept the latest answer "
                                  f"{_where(df.loc[latest])} of {places}")
    _fail(problems, "conflicting answers (remove the wrong file, or set reader.duplicates: latest)")
    n = audit["identical_duplicates_dropped"]
    if n:
        audit["decisions"].append(f"{n} repeated identical answer row(s) dropped (the same export read twice, "
                                  f"e.g. its CSV and its JSON)")
    return df.loc[keep].copy()


def _answer_text(row: pd.Series) -> str:
    a = {1.0: "yes", 0.0: "no"}.get(row["agree"], "-")
    q = "-" if pd.isna(row["quality"]) else int(row["quality"])
    d = "-" if pd.isna(row["difficulty"]) else int(row["difficulty"])
    return f"agree {a}, quality {q}, difficulty {d}"

