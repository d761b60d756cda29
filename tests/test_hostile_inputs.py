"""Hostile inputs, generated with hypothesis: malformed label CSVs (nih-cxr-lt and csv
sources), params files and published prediction pickles. Every malformed input must end in
the project's own error type (:class:`~cxrprune.core.errors.CxrpruneError`) with a message that
names the file and the problem, never another exception; an input that happens to be valid
must give a valid result."""

from __future__ import annotations

import io
import math
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nih_layout import CLASSES, write_nih_dataset
from workspaces import REPO

from cxrprune.core.config import Params, SourceOptions, load_params
from cxrprune.core.errors import ConfigError, CxrpruneError, DataError
from cxrprune.datasets.importer import LABEL_COLUMN, read_published
from cxrprune.datasets.prepare import validate
from cxrprune.datasets.sources import NIH_LABEL_FILE, SPLITS, read_source

# 60 examples per property keep the file under a few seconds; HOSTILE_EXAMPLES=1000 searches harder.
SETTINGS = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Values no label, probability or parameter should accept.
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", " ", "NaN", "nan", "inf", "-1", "2", "1e308", "-0", "0x1", "١", "½", "yes", "\u202e1",
                     "1,0", "0.5", "\x00", "☃"]),
)


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    """A valid NIH-CXR-LT folder (images written once); examples write their own label CSVs."""
    root = tmp_path_factory.mktemp("nih")
    frames = write_nih_dataset(root, per_split=24, size=8)
    return root, frames


def _is_binary(value) -> bool:
    """Would the source readers take this cell as a 0/1 label (written to and read from CSV)?"""
    text = "" if value is None else str(value)
    coerced = pd.to_numeric(pd.Series([text]), errors="coerce").iloc[0]
    return bool(coerced in (0, 1))


def _splits_rows(mutation: tuple) -> bool:
    """A carriage return written unquoted into a CSV cell starts a new row: another problem."""
    return any(isinstance(v, str) and "\r" in v for v in mutation)


def _check_error(exc: CxrpruneError, names: list[str], keywords: tuple[str, ...] = ()) -> None:
    msg = str(exc)
    assert "\n" not in msg.strip() or len(msg) < 2000
    assert any(n in msg for n in names), f"message does not name the file: {msg}"
    if keywords:
        assert any(k in msg for k in keywords), f"message does not name the problem ({keywords}): {msg}"


# --- nih-cxr-lt label CSVs ---------------------------------------------------------------

NIH_COLUMNS = ["id", *CLASSES, "subj_id"]

nih_mutation = st.one_of(
    st.tuples(st.just("empty"), st.sampled_from(SPLITS)),
    st.tuples(st.just("binary"), st.sampled_from(SPLITS), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("text"), st.sampled_from(SPLITS), st.text(min_size=1, max_size=300)),
    st.tuples(st.just("drop_column"), st.sampled_from(SPLITS), st.sampled_from(NIH_COLUMNS)),
    st.tuples(st.just("duplicate_column"), st.sampled_from(SPLITS), st.sampled_from(NIH_COLUMNS)),
    st.tuples(st.just("extra_column"), st.sampled_from(SPLITS), st.text(min_size=1, max_size=12)),
    st.tuples(st.just("bad_value"), st.sampled_from(SPLITS), st.sampled_from(CLASSES), st.integers(0, 23), HOSTILE),
    st.tuples(st.just("empty_id"), st.sampled_from(SPLITS), st.sampled_from(["id", "subj_id"]), st.integers(0, 23)),
    st.tuples(st.just("header_only"), st.sampled_from(SPLITS)),
    st.tuples(st.just("ragged"), st.sampled_from(SPLITS), st.integers(0, 23)),
    st.tuples(st.just("duplicate_id"), st.sampled_from(SPLITS), st.integers(1, 23)),
    st.tuples(st.just("shared_patient"), st.sampled_from(["val", "test"]), st.integers(0, 23)),
    st.tuples(st.just("truncate"), st.sampled_from(SPLITS), st.integers(2, 24), st.floats(0.05, 0.6)),
)

NIH_KEYWORDS = {
    "empty": ("not a readable CSV",), "drop_column": ("missing column",),
    "duplicate_column": ("duplicate column",), "extra_column": ("unexpected column", "missing column"),
    "bad_value": ("0/1",), "empty_id": ("is empty",), "header_only": ("no ",), "ragged": ("not a readable CSV",),
    "duplicate_id": ("duplicate id",), "shared_patient": ("patient",), "truncate": ("0/1", "is empty"),
}


def _nih_files(frames: dict[str, pd.DataFrame], mutation: tuple) -> tuple[dict[str, bytes], bool]:
    """The three label files with one mutation applied; and whether the result may still be valid."""
    kind, split = mutation[0], mutation[1]
    files = {s: df.to_csv(index=False).encode() for s, df in frames.items()}
    df = frames[split].copy()
    benign = False
    if kind == "empty":
        files[split] = b""
    elif kind == "binary":
        files[split] = mutation[2]
    elif kind == "text":
        files[split] = mutation[2].encode("utf-8", "surrogatepass")
    elif kind == "drop_column":
        files[split] = df.drop(columns=[mutation[2]]).to_csv(index=False).encode()
    elif kind == "duplicate_column":
        files[split] = pd.concat([df, df[[mutation[2]]]], axis=1).to_csv(index=False).encode()
    elif kind == "extra_column":
        assume(mutation[2] not in NIH_COLUMNS and mutation[2].strip() == mutation[2] and mutation[2] != "")
        assume(not any(ch in mutation[2] for ch in "\r\n\"\x00"))
        files[split] = df.assign(**{mutation[2]: 0}).to_csv(index=False).encode()
    elif kind == "bad_value":
        _, _, column, row, value = mutation
        benign = _is_binary(value)
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
        files[split] = df.to_csv(index=False).encode("utf-8", "surrogatepass")
    elif kind == "empty_id":
        df[mutation[2]] = df[mutation[2]].astype(object)
        df.loc[mutation[3], mutation[2]] = ""
        files[split] = df.to_csv(index=False).encode()
    elif kind == "header_only":
        files[split] = (",".join(NIH_COLUMNS) + "\n").encode()
    elif kind == "ragged":
        lines = files[split].decode().splitlines()
        lines[1 + mutation[2]] += ",1,extra"
        files[split] = ("\n".join(lines) + "\n").encode()
    elif kind == "duplicate_id":
        df.loc[mutation[2], "id"] = df.loc[0, "id"]
        files[split] = df.to_csv(index=False).encode()
    elif kind == "shared_patient":
        df.loc[mutation[2], "subj_id"] = frames["train"].loc[0, "subj_id"]
        files[split] = df.to_csv(index=False).encode()
    elif kind == "truncate":
        lines = files[split].decode().splitlines(keepends=True)
        keep, frac = min(mutation[2], len(lines) - 1), mutation[3]
        last = lines[keep]
        cut = max(1, int(last.rindex(",") * frac))  # inside the line, before its last field
        files[split] = "".join(lines[:keep]).encode() + last[:cut].encode()
    return files, benign


@SETTINGS
@given(mutation=nih_mutation)
def test_malformed_nih_label_csvs_are_data_errors(nih, mutation):
    root, frames = nih
    files, benign = _nih_files(frames, mutation)
    with tempfile.TemporaryDirectory(dir=root) as labels:
        for split, data in files.items():
            (Path(labels) / NIH_LABEL_FILE.format(split=split)).write_bytes(data)
        try:
            data = read_source("nih-cxr-lt", root, SourceOptions(labels=labels))
            validate(data)
        except CxrpruneError as exc:
            names = [NIH_LABEL_FILE.format(split=s) for s in SPLITS]
            generic = mutation[0] in ("binary", "text") or _splits_rows(mutation)
            _check_error(exc, names, () if generic else NIH_KEYWORDS[mutation[0]])
            return
    assert benign, f"{mutation[0]} was accepted"
    assert all(set(np.unique(df[CLASSES].to_numpy())) <= {0, 1} for df in data.splits.values())


# --- csv source ------------------------------------------------------------------------

CSV_CLASSES = CLASSES[:3]  # positives in every split of the fixture


@pytest.fixture(scope="module")
def csv_frame(nih):
    _, frames = nih
    rows = []
    for split, df in frames.items():
        rows.append(pd.DataFrame({"path": "images/" + df["id"], "patient_id": df["subj_id"], "split": split,
                                  **{c: df[c] for c in CSV_CLASSES}}))
    return pd.concat(rows, ignore_index=True)


csv_mutation = st.one_of(
    st.tuples(st.just("empty")),
    st.tuples(st.just("binary"), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("drop_column"), st.sampled_from(["path", "split"])),
    st.tuples(st.just("drop_classes")),
    st.tuples(st.just("bad_split"), st.integers(0, 71), HOSTILE),
    st.tuples(st.just("bad_value"), st.sampled_from(CSV_CLASSES), st.integers(0, 71), HOSTILE),
    st.tuples(st.just("empty_path"), st.integers(0, 71)),
    st.tuples(st.just("duplicate_column"), st.sampled_from(["path", "patient_id", "split", *CSV_CLASSES])),
    st.tuples(st.just("missing_image"), st.integers(0, 71),
              st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)),
)

CSV_KEYWORDS = {
    "empty": ("not a readable CSV",), "drop_column": ("missing column",), "drop_classes": ("no class columns",),
    "bad_split": ("must hold train, val or test", "is empty"), "bad_value": ("0/1",), "empty_path": ("is empty",),
    "duplicate_column": ("duplicate column",), "missing_image": ("missing",),
}


@SETTINGS
@given(mutation=csv_mutation)
def test_malformed_csv_source_labels_are_data_errors(nih, csv_frame, mutation):
    root, _ = nih
    kind = mutation[0]
    df = csv_frame.copy()
    benign = False
    data: bytes
    if kind == "empty":
        data = b""
    elif kind == "binary":
        data = mutation[1]
    elif kind == "drop_column":
        data = df.drop(columns=[mutation[1]]).to_csv(index=False).encode()
    elif kind == "drop_classes":
        data = df.drop(columns=CSV_CLASSES).to_csv(index=False).encode()
    elif kind in ("bad_split", "bad_value"):
        column, row, value = ("split", mutation[1], mutation[2]) if kind == "bad_split" else mutation[1:]
        if kind == "bad_split":
            original = df.loc[row, "split"]
            benign = str(value).strip().lower() in ({original} | ({"training"} if original == "train" else set())
                                                    | ({"valid", "validate", "validation"} if original == "val"
                                                       else set()) | ({"testing"} if original == "test" else set()))
        else:
            benign = _is_binary(value)
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
        data = df.to_csv(index=False).encode("utf-8", "surrogatepass")
    elif kind == "empty_path":
        df.loc[mutation[1], "path"] = ""
        data = df.to_csv(index=False).encode()
    elif kind == "duplicate_column":
        data = pd.concat([df, df[[mutation[1]]]], axis=1).to_csv(index=False).encode()
    elif kind == "missing_image":
        df.loc[mutation[1], "path"] = "images/nowhere-" + mutation[2]
        data = df.to_csv(index=False).encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory(dir=root) as folder:
        path = Path(folder) / "labels.csv"
        path.write_bytes(data)
        try:
            result = read_source("csv", root, SourceOptions(labels=str(path)))
            validate(result)
        except CxrpruneError as exc:
            generic = kind == "binary" or _splits_rows(mutation)
            _check_error(exc, ["labels.csv", "image(s) missing"], () if generic else CSV_KEYWORDS[kind])
            return
    assert benign, f"{kind} was accepted"


# --- params files ----------------------------------------------------------------------

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _valid_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _leaf_paths(obj, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _leaf_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _leaf_paths(v, (*prefix, i))
    return out


PARAM_PATHS = _leaf_paths(_valid_params())

def _alias_bomb(levels: int = 8, width: int = 9) -> str:
    """A YAML document of a few hundred bytes whose value has width**levels leaves."""
    node = "&a0 [" + ", ".join(["x"] * width) + "]"
    for k in range(1, levels):
        node = f"&a{k} [{node}, " + ", ".join([f"*a{k - 1}"] * (width - 1)) + "]"
    return "seeds: [" + node + "]\n"


# Each was a crash, a hang or an accepted bad value before this file existed (marked), or is
# a classic: empty files, duplicate keys, unsafe tags, BOM, odd YAML types.
ODD_DOCUMENTS = {
    "empty": "", "blank": "\n", "end markers": "---\n...\n", "open list": "[", "open mapping": "{",
    "unclosed": "seeds: [0\n", "duplicate top key": "seeds: [0]\nseeds: [1]\n",
    "duplicate nested key": "train:\n  lr: 1\n  lr: 2\n",
    "list as key (was TypeError)": "? [a, b]\n: 1\n", "mapping as key (was TypeError)": "train:\n  ? {x: 1}\n  : 2\n",
    "python tag": "!!python/object/apply:os.system ['true']\n", "binary": "seeds: !!binary aGVsbG8=\n",
    "set": "seeds: !!set {1, 2}\n", "timestamp": "data:\n  name: 2001-01-01\n",
    "self-referencing list": "seeds: &a [*a]\n", "self-referencing mapping": "train: &t {lr: *t}\n",
    "deep list (was RecursionError)": "[" * 3000 + "]" * 3000,
    "deep mapping (was RecursionError)": "{a: " * 2000 + "1" + "}" * 2000,
    "alias bomb (was a 170 MB message)": _alias_bomb(),
    "name .. (was accepted)": "data:\n  name: '..'\n", "NUL in a path": "data:\n  root: \"a\\0b\"\n",
    "BOM": "\ufeffseeds: [0]\n", "tab": "seeds: [0]\t\n",
    "negative synthetic seed (was accepted)": "synthetic:\n  seed: -1\n",
    "huge image size (was accepted)": "data:\n  image_size: 100000000000000000000000\n",
    "infinite lr": "train:\n  lr: 1e999\n",
    "integer beyond float (was OverflowError)": "train:\n  lr: 1" + "0" * 400 + "\n",
    "huge batch (was accepted)": "train:\n  batch_size: 4294967296\n",
    "NaN": "evaluate:\n  alpha: .nan\n", "threads beyond int32 (was accepted)": "train:\n  threads: 3000000000\n",
}


def _load(text: bytes) -> Params:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        path.write_bytes(text)
        return load_params(path)


@SETTINGS
@given(doc=yaml_values)
def test_random_yaml_documents_are_config_errors(doc):
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    try:
        _load(text)
    except ConfigError as exc:
        assert "params.yaml" in str(exc) and len(str(exc)) < 2000
        return
    assert doc in (None, {}), f"accepted {doc!r}"


@pytest.mark.parametrize("name", list(ODD_DOCUMENTS))
def test_odd_params_files_are_config_errors(name):
    text = ODD_DOCUMENTS[name]
    if name in ("empty", "blank", "end markers", "BOM"):  # valid: the defaults, or seeds [0]
        assert isinstance(_load(text.encode()), Params)
        return
    with pytest.raises(ConfigError) as err:
        _load(text.encode())
    assert "params.yaml" in str(err.value) and len(str(err.value)) < 2000


@SETTINGS
@given(text=st.text(max_size=200), raw=st.binary(max_size=200))
def test_random_texts_and_bytes_are_config_errors(text, raw):
    for data in (text.encode("utf-8", "surrogatepass"), raw):
        try:
            params = _load(data)
        except ConfigError as exc:
            assert "params.yaml" in str(exc) and len(str(exc)) < 2000
            continue
        assert isinstance(params, Params)  # e.g. a comment, or blank


@SETTINGS
@given(path=st.sampled_from(PARAM_PATHS), value=st.one_of(HOSTILE, yaml_values))
def test_a_hostile_value_anywhere_in_params_is_refused_by_name(path, value):
    doc = _valid_params()
    node = doc
    for key in path[:-1]:
        node = node[key]
    original = node[path[-1]]
    node[path[-1]] = value
    try:
        text = yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")
    except yaml.YAMLError:
        assume(False)
    try:
        _load(text)
    except ConfigError as exc:
        name = next(str(k) for k in reversed(path) if isinstance(k, str))
        assert name in str(exc), f"{path}: {exc}"
        return
    # Accepted: only a value of the right kind (a float may be written as an integer, or as a
    # string PyYAML did not take for a number, like 1e-3) and within range.
    if isinstance(original, float) and isinstance(value, str):
        value = float(value)
    assert type(value) is type(original) or (isinstance(original, float) and type(value) is int), (path, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert 0 <= value < 2**32 and math.isfinite(value), (path, value)


# --- published prediction pickles --------------------------------------------------------

N = 6


@pytest.fixture(scope="module")
def published():
    rng = np.random.default_rng(0)
    y = np.zeros((N, len(CLASSES)), dtype=np.int8)
    y[np.arange(N), np.arange(N) % len(CLASSES)] = 1
    y[1, 7] = 1
    test = pd.DataFrame(y, columns=CLASSES)
    test.insert(0, "patient_id", [f"{i:08d}" for i in range(N)])
    test.insert(0, "image_id", [f"{i:08d}_000.png" for i in range(N)])
    truth = y.astype(bool)
    good = pd.DataFrame(rng.random((N, len(CLASSES))).astype(np.float32), columns=CLASSES)
    good[LABEL_COLUMN] = ["|".join(c for c, v in zip(CLASSES, row) if v) for row in truth]
    return test, truth, good


frame_mutation = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from([*CLASSES, LABEL_COLUMN])),
    st.tuples(st.just("duplicate"), st.sampled_from([*CLASSES, LABEL_COLUMN])),
    st.tuples(st.just("rename"), st.sampled_from([*CLASSES, LABEL_COLUMN]), st.one_of(st.integers(), st.text(max_size=8),
                                                                                      st.none(), st.floats())),
    st.tuples(st.just("cell"), st.sampled_from(CLASSES), st.integers(0, N - 1),
              st.one_of(HOSTILE, st.just(pd.NA), st.just(1 + 2j), st.just(b"0.5"), st.just([0.5]),
                        st.just(pd.Timestamp("2020-01-01")), st.just(10**400 // 10**350))),
    st.tuples(st.just("label"), st.integers(0, N - 1), st.one_of(HOSTILE, st.just(["Hernia"]))),
    st.tuples(st.just("rows"), st.integers(0, 2 * N).filter(lambda n: n != N)),
    st.tuples(st.just("empty")),
    st.tuples(st.just("no_columns")),
    st.tuples(st.just("multiindex")),
    st.tuples(st.just("object"), st.one_of(st.none(), st.integers(), st.text(max_size=10),
                                           st.lists(st.integers(), max_size=3),
                                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=3))),
    st.tuples(st.just("series")),
    st.tuples(st.just("array")),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("truncated"), st.floats(0.0, 0.95)),
)


def _pickle_bytes(good: pd.DataFrame, mutation: tuple) -> tuple[bytes, bool]:
    kind = mutation[0]
    df = good.copy()
    benign = False
    if kind == "drop":
        df = df.drop(columns=[mutation[1]])
    elif kind == "duplicate":
        df = pd.concat([df, df[[mutation[1]]]], axis=1)
    elif kind == "rename":
        assume(str(mutation[2]) != mutation[1])
        df = df.rename(columns={mutation[1]: mutation[2]})
    elif kind == "cell":
        _, column, row, value = mutation
        df[column] = df[column].astype(object)  # a probability column of Python objects: a wrong type
        df.at[row, column] = value
    elif kind == "label":
        df[LABEL_COLUMN] = df[LABEL_COLUMN].astype(object)
        df.at[mutation[1], LABEL_COLUMN] = mutation[2]
        benign = mutation[2] == good.loc[mutation[1], LABEL_COLUMN]
    elif kind == "rows":
        df = pd.concat([df] * 3, ignore_index=True).iloc[:mutation[1]]
    elif kind == "empty":
        df = df.iloc[:0]
    elif kind == "no_columns":
        df = pd.DataFrame(index=range(N))
    elif kind == "multiindex":
        df.columns = pd.MultiIndex.from_tuples([(c, "p") for c in df.columns])
    elif kind == "object":
        return pickle.dumps(mutation[1]), False
    elif kind == "series":
        return pickle.dumps(df[CLASSES[0]]), False
    elif kind == "array":
        return pickle.dumps(df[CLASSES].to_numpy()), False
    elif kind == "bytes":
        return mutation[1], False
    elif kind == "truncated":
        buf = io.BytesIO()
        df.to_pickle(buf)
        data = buf.getvalue()
        return data[:int(len(data) * mutation[1])], False
    buf = io.BytesIO()
    df.to_pickle(buf)
    return buf.getvalue(), benign


@SETTINGS
@given(mutation=frame_mutation)
def test_malformed_prediction_pickles_are_data_errors(published, mutation):
    test, truth, good = published
    data, benign = _pickle_bytes(good, mutation)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nih-cxr-lt_resnet50_seed-0_prune-0.pkl"
        path.write_bytes(data)
        try:
            probs = read_published(path, CLASSES, test, truth, Path("labels_test.csv"))
        except DataError as exc:
            _check_error(exc, [path.name])
            return
    assert benign, f"{mutation} was accepted"
    assert probs.shape == (N, len(CLASSES)) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
