"""Readers' answer files: formats, validation errors and the recorded decisions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cxrprune.core.errors import DataError
from cxrprune.reader.answers import (
    ANSWER_COLUMNS,
    FORMAT,
    find_answer_files,
    load_answers,
    read_answer_file,
)
from cxrprune.reader.sample import study_id

CASES = ["AAAAAA", "BBBBBB", "CCCCCC", "DDDDDD"]
STUDY1 = study_id(1, CASES[:2])
STUDY2 = study_id(2, CASES[2:])


@pytest.fixture
def key():
    return pd.DataFrame({"case_id": CASES, "form": [1, 1, 2, 2], "position": [1, 2, 1, 2],
                         "image_id": ["a.png", "b.png", "c.png", "d.png"], "is_pie": [True, False, False, True],
                         "stratum": ["Mass"] * 4})


@pytest.fixture
def manifest():
    return pd.DataFrame({"form": [1, 1, 2, 2], "position": [1, 2, 1, 2], "case_id": CASES,
                         "image_id": ["a.png", "b.png", "c.png", "d.png"], "labels": ["Mass"] * 4,
                         "study": [STUDY1, STUDY1, STUDY2, STUDY2]})


def row(case="AAAAAA", reader="r1", agree="yes", quality="4", difficulty="2", form="1", seconds="12.5",
        answered_at="2024-05-01T10:00:00.000Z", study=None, position="1") -> dict:
    if study is None:
        study = STUDY1 if form == "1" else STUDY2 if form == "2" else ""
    return {"form": form, "study": study, "reader_id": reader, "case_id": case, "position": position,
            "agree": agree, "quality": quality, "difficulty": difficulty, "seconds": seconds,
            "answered_at": answered_at}


def write_csv(path, rows):
    pd.DataFrame(rows, columns=ANSWER_COLUMNS).to_csv(path, index=False)
    return path


def write_json(path, rows, **top):
    path.write_text(json.dumps({"format": FORMAT, **top, "answers": rows}))
    return path


def full_form(reader="r1") -> list[dict]:
    return [row("AAAAAA", reader, "no", "2", "4"), row("BBBBBB", reader, "yes", "5", "1", position="2"),
            row("CCCCCC", reader, "yes", "3", "3", form="2"), row("DDDDDD", reader, "no", "1", "5", form="2",
                                                                   position="2")]


def load(paths, key, manifest, **kw):
    return load_answers([(p, "real") for p in paths], key, manifest, **kw)


def test_csv_and_json_exports_of_one_session_count_once(tmp_path, key, manifest):
    rows = full_form()
    csv = write_csv(tmp_path / "a.csv", rows)
    top = {"reader_id": "r1"}
    js = write_json(tmp_path / "a.json", [{k: v for k, v in r.items() if k != "reader_id"} for r in rows], **top)
    ratings, report = load([csv, js], key, manifest)
    assert len(ratings) == 4 and report["identical_duplicates_dropped"] == 4
    assert report["files"] == 2 and report["rows_read"] == 8
    r = ratings.set_index("case_id")
    assert r.loc["AAAAAA", "agree"] == 0 and r.loc["BBBBBB", "agree"] == 1
    assert r.loc["DDDDDD", "difficulty"] == 5 and bool(r.loc["DDDDDD", "is_pie"]) is True
    assert r.loc["CCCCCC", "image_id"] == "c.png" and r.loc["CCCCCC", "form"] == 2
    assert any("CSV and its JSON" in d for d in report["decisions"])


def test_two_readers_of_one_case_are_both_kept(tmp_path, key, manifest):
    a = write_csv(tmp_path / "a.csv", full_form("r1"))
    b = write_csv(tmp_path / "b.csv", full_form("r2"))
    ratings, _ = load([a, b], key, manifest)
    assert len(ratings) == 8 and set(ratings["reader_id"]) == {"r1", "r2"}


def test_a_minimal_spreadsheet_is_enough(tmp_path, key, manifest):
    path = tmp_path / "sheet.csv"
    path.write_text("reader_id,case_id,agree,quality,difficulty\nr9,AAAAAA,Yes,5,1\nr9,CCCCCC,n,2.0,4\n")
    ratings, _ = load([path], key, manifest)
    assert ratings["agree"].tolist() == [1.0, 0.0] and ratings["quality"].tolist() == [5.0, 2.0]
    assert ratings["seconds"].isna().all()


@pytest.mark.parametrize("change, message", [
    ({"case": "ZZZZZZ"}, "unknown case id 'ZZZZZZ'"),
    ({"quality": "7"}, "quality must be an integer from 1 to 5, got '7'"),
    ({"quality": "0"}, "quality must be an integer"),
    ({"difficulty": "2.5"}, "difficulty must be an integer"),
    ({"difficulty": "hard"}, "difficulty must be an integer"),
    ({"agree": "maybe"}, "agree must be yes or no"),
    ({"seconds": "-3"}, "seconds must be a number >= 0"),
    ({"reader": ""}, "reader_id is empty"),
    ({"form": "2", "study": STUDY1}, "belongs to form 1"),
    ({"study": "0123456789ab"}, "another draw of form 1"),
    ({"form": "one"}, "form must be a form number"),
])
def test_invalid_answers_are_clear_errors_with_file_and_row(tmp_path, key, manifest, change, message):
    rows = full_form()
    rows[1] = row(**{"case": "BBBBBB", "position": "2", **change})
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as err:
        load([path], key, manifest)
    assert message in str(err.value)
    if "unknown" not in message:
        assert "bad.csv row 3" in str(err.value)


def test_a_reader_answering_one_case_twice_differently_is_an_error(tmp_path, key, manifest):
    a = write_csv(tmp_path / "first.csv", [row("AAAAAA", quality="4", answered_at="2024-05-01T10:00:00Z")])
    b = write_csv(tmp_path / "second.csv", [row("AAAAAA", quality="2", answered_at="2024-05-02T10:00:00Z")])
    with pytest.raises(DataError) as err:
        load([a, b], key, manifest)
    text = str(err.value)
    assert "'r1'" in text and "AAAAAA" in text and "first.csv" in text and "second.csv" in text
    assert "reader.duplicates: latest" in text


def test_latest_keeps_the_last_answer_and_records_it(tmp_path, key, manifest):
    a = write_csv(tmp_path / "first.csv", [row("AAAAAA", quality="4", answered_at="2024-05-02T10:00:00Z")])
    b = write_csv(tmp_path / "second.csv", [row("AAAAAA", quality="2", answered_at="2024-05-01T10:00:00Z")])
    ratings, report = load([a, b], key, manifest, duplicates="latest")
    assert ratings["quality"].tolist() == [4.0]
    assert report["conflicts_resolved"] == 1 and "kept the latest answer" in report["decisions"][0]


def test_unanswered_rows_are_dropped_and_partial_answers_counted(tmp_path, key, manifest):
    rows = full_form()
    rows[1] = row("BBBBBB", agree="", quality="", difficulty="", position="2")
    rows[2] = row("CCCCCC", form="2", agree="yes", quality="", difficulty="3")
    ratings, report = load([write_csv(tmp_path / "a.csv", rows)], key, manifest)
    assert len(ratings) == 3 and report["unanswered_rows_dropped"] == 1
    assert report["missing_answers"] == {"agree": 0, "quality": 1, "difficulty": 0}
    assert any("without any answer" in d for d in report["decisions"])


def test_file_level_problems(tmp_path, key, manifest):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        read_answer_file(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("reader,case,agree\nr1,AAAAAA,yes\n")
    with pytest.raises(DataError, match="missing column"):
        read_answer_file(tmp_path / "cols.csv")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="answers"):
        read_answer_file(tmp_path / "list.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something/2", "answers": []}))
    with pytest.raises(DataError, match="unknown format"):
        read_answer_file(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not a readable JSON"):
        read_answer_file(tmp_path / "broken.json")


def test_no_files_means_no_ratings(key, manifest):
    ratings, report = load_answers([], key, manifest)
    assert ratings.empty and report["files"] == 0


def test_answer_files_are_found_recursively_skipping_hidden_and_other_files(tmp_path):
    (tmp_path / "dr-a").mkdir()
    (tmp_path / ".trash").mkdir()
    for name in ("dr-a/form-1.csv", "dr-a/form-1.JSON", "b.csv", ".hidden.csv", ".trash/x.csv", "README.md",
                 "notes.txt"):
        (tmp_path / name).write_text("")
    found = [p.relative_to(tmp_path).as_posix() for p in find_answer_files(tmp_path)]
    assert found == ["b.csv", "dr-a/form-1.JSON", "dr-a/form-1.csv"]
    assert find_answer_files(tmp_path / "absent") == []


def test_an_image_rated_again_under_another_case_id_is_counted(tmp_path, key, manifest):
    key = key.assign(image_id=["a.png", "b.png", "c.png", "a.png"])  # a.png recurs in form 2
    ratings, report = load([write_csv(tmp_path / "a.csv", full_form())], key, manifest)
    assert len(ratings) == 4 and report["repeat_image_ratings"] == 1
    assert any("another case id" in d for d in report["decisions"])


def test_a_form_exported_before_any_answer_gives_no_ratings(tmp_path, key, manifest):
    rows = [row(c, agree="", quality="", difficulty="", form=f) for c, f in zip(CASES, "1122")]
    ratings, report = load([write_csv(tmp_path / "a.csv", rows)], key, manifest)
    assert ratings.empty and report["unanswered_rows_dropped"] == 4
