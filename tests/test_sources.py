"""The mimic-cxr-lt, csv and medmnist sources: fixture datasets in each exact layout are
prepared into the common contract, and each kind of bad input is one clear DataError that
names the file and the offending ids."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from nih_layout import write_nih_dataset
from PIL import Image
from source_layouts import (
    CSV_CLASSES,
    MIMIC_CLASSES,
    write_csv_dataset,
    write_medmnist,
    write_mimic_dataset,
)

from cxrprune.core.config import DataConfig, SourceOptions, from_dict
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.datasets.prepare import (
    load_meta,
    load_split,
    partial_dir,
    prepare_dataset,
)
from cxrprune.datasets.sources import CHESTMNIST_CLASSES, NpzMember, read_source

SIZE = 32


def _cfg(source, root, workers=1, **options):
    return DataConfig(name="fixture", source=source, root=str(root), image_size=SIZE, workers=workers,
                      options=SourceOptions(**options))


def _resized(img: Image.Image) -> np.ndarray:
    """What the cache must hold for one image (the conversion prepare documents)."""
    if img.mode.startswith("I"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.round(a * (255.0 / a.max())).astype(np.uint8), "L")
    elif img.mode != "L":
        img = img.convert("L")
    return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0))


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# --- mimic-cxr-lt ---------------------------------------------------------------------------


def test_mimic_layout_prepares_with_labels_in_their_own_folder(tmp_path):
    root, labels = tmp_path / "mimic-cxr-jpg", tmp_path / "labels"
    frames = write_mimic_dataset(root, label_dir=labels)
    meta = prepare_dataset(_cfg("mimic-cxr-lt", root, labels=str(labels)), tmp_path / "prep")
    assert meta["classes"] == MIMIC_CLASSES and meta["source"] == "mimic-cxr-lt"
    assert meta["counts"] == {"train": 24, "val": 24, "test": 24}
    table, images = load_split(tmp_path / "prep", "test")
    assert list(table.columns) == ["image_id", "patient_id", *MIMIC_CLASSES]
    assert table["image_id"].tolist() == frames["test"]["path"].tolist()  # image id = the path
    assert table["patient_id"].tolist() == frames["test"]["subject_id"].astype(str).tolist()
    assert np.array_equal(table[MIMIC_CLASSES].to_numpy(), frames["test"][MIMIC_CLASSES].to_numpy())
    with Image.open(root / frames["test"]["path"].iloc[5]) as img:
        assert np.array_equal(images[5], _resized(img))
    assert not partial_dir(tmp_path / "prep").exists()


def test_mimic_label_files_default_to_the_root_and_subj_id_is_detected(tmp_path):
    root = tmp_path / "mimic"
    write_mimic_dataset(root, patient_column="subj_id")
    prepare_dataset(_cfg("mimic-cxr-lt", root), tmp_path / "prep")
    assert load_split(tmp_path / "prep", "val")[0]["patient_id"].str.fullmatch(r"\d+").all()


def test_mimic_patient_column_can_be_configured_and_classes_reordered(tmp_path):
    root = tmp_path / "mimic"
    frames = write_mimic_dataset(root, patient_column="patient")
    order = sorted(MIMIC_CLASSES)
    meta = prepare_dataset(_cfg("mimic-cxr-lt", root, patient_column="patient", classes=order), tmp_path / "prep")
    assert meta["classes"] == order
    table, _ = load_split(tmp_path / "prep", "train")
    assert list(table.columns)[2:] == order
    assert table["patient_id"].iloc[0] == str(frames["train"]["patient"].iloc[0])


def test_mimic_without_a_patient_column_says_which_it_looked_for(tmp_path):
    root = tmp_path / "mimic"
    write_mimic_dataset(root, patient_column="patient")
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("mimic-cxr-lt", root), tmp_path / "prep")
    message = _one_line(err)
    assert "labels_train.csv" in message and "subject_id" in message and "data.options.patient_column" in message


def _edit_csv(path, fn, dtype=str):
    df = pd.read_csv(path, dtype=dtype, keep_default_na=False)
    fn(df)
    df.to_csv(path, index=False)


def _mimic_file(root, split):
    return root / f"miccai2023_mimic-cxr-lt_labels_{split}.csv"


@pytest.mark.parametrize("case, expect", [
    ("missing_class", ["labels_val.csv", "missing column", "Pleural Other"]),
    ("extra_class", ["labels_train.csv", "unexpected class column", "Infiltration"]),
    ("extra_binary_column", ["labels_test.csv", "unexpected class column", "Flag"]),
    ("nan", ["labels_test.csv", "'Edema'", "0/1", "files/p"]),
    ("non_binary", ["labels_train.csv", "'Fracture'", "0/1", "train004.jpg", "['2']"]),
    ("duplicate", ["labels_val.csv", "duplicate id", ".jpg"]),
    ("patient_leak", ["labels_test.csv", "patient", "also appear in the train split"]),
    ("missing_images", ["4 listed image(s) missing", "labels_val.csv", ".jpg"]),
    ("truncated", ["could not be prepared", ".jpg", "unreadable or truncated"]),
])
def test_mimic_bad_inputs(tmp_path, case, expect):
    root = tmp_path / "mimic"
    frames = write_mimic_dataset(root)
    if case == "missing_class":
        _edit_csv(_mimic_file(root, "val"), lambda df: df.pop("Pleural Other"))
    elif case == "extra_class":
        _edit_csv(_mimic_file(root, "train"), lambda df: df.insert(6, "Infiltration", "0"))
    elif case == "extra_binary_column":
        _edit_csv(_mimic_file(root, "test"), lambda df: df.insert(6, "Flag", ["0", "1"] * 12))
    elif case == "nan":
        _edit_csv(_mimic_file(root, "test"), lambda df: df.__setitem__("Edema", df["Edema"].where(df.index != 2, "")))
    elif case == "non_binary":
        _edit_csv(_mimic_file(root, "train"), lambda df: df.__setitem__("Fracture", df["Fracture"].where(df.index != 4, "2")))
    elif case == "duplicate":
        _edit_csv(_mimic_file(root, "val"), lambda df: df.__setitem__("path", df["path"].where(df.index != 3, df["path"][0])))
    elif case == "patient_leak":
        leak = str(frames["train"]["subject_id"].iloc[0])
        _edit_csv(_mimic_file(root, "test"), lambda df: df.__setitem__("subject_id", df["subject_id"].where(df.index != 0, leak)))
    elif case == "missing_images":
        for i in (1, 2, 3, 7):
            (root / frames["val"]["path"].iloc[i]).unlink()
    elif case == "truncated":
        path = root / frames["test"]["path"].iloc[2]
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("mimic-cxr-lt", root), tmp_path / "prep")
    message = _one_line(err)
    for part in expect:
        assert part in message, message
    assert not (tmp_path / "prep").exists()
    if case == "missing_images":  # the first few are named
        assert frames["val"]["path"].iloc[1] in message


# --- csv ------------------------------------------------------------------------------------


def test_csv_single_file_with_rgb_and_16_bit_pngs(tmp_path):
    root = tmp_path / "ds"
    frames = write_csv_dataset(root)
    meta = prepare_dataset(_cfg("csv", root), tmp_path / "prep")
    assert meta["classes"] == CSV_CLASSES  # inferred: the remaining 0/1 columns, in file order
    assert meta["counts"] == {"train": 20, "val": 20, "test": 20}  # "validate" read as val
    table, images = load_split(tmp_path / "prep", "train")
    assert list(table.columns) == ["image_id", "patient_id", *CSV_CLASSES]
    assert table["image_id"].tolist() == frames["train"]["path"].tolist()
    for i in range(3):  # gray, RGB, 16-bit
        with Image.open(root / frames["train"]["path"].iloc[i]) as img:
            assert img.mode == ("L", "RGB", "I;16")[i]
            assert np.array_equal(images[i], _resized(img))
    assert images[2].max() > 200  # 16-bit scaled to the 8-bit range (not clipped to 0..255 of 65535)


def test_csv_one_file_per_split_and_parallel_decoding(tmp_path):
    root = tmp_path / "ds"
    write_csv_dataset(root, per_split_files=True, per_split=150)
    prepare_dataset(_cfg("csv", root, workers=2), tmp_path / "a")
    prepare_dataset(_cfg("csv", root, workers=1), tmp_path / "b")
    for split in ("train", "val", "test"):
        assert np.array_equal(load_split(tmp_path / "a", split)[1], load_split(tmp_path / "b", split)[1])


def test_csv_configured_columns_and_explicit_classes(tmp_path):
    root = tmp_path / "ds"
    write_csv_dataset(root, extra_columns=True)
    df = pd.read_csv(root / "labels.csv").rename(columns={"path": "file", "patient_id": "pid", "split": "fold"})
    (root / "meta").mkdir()
    df.to_csv(root / "meta" / "my_labels.csv", index=False)
    (root / "labels.csv").unlink()
    cfg = _cfg("csv", root, labels="meta/my_labels.csv", image_column="file", patient_column="pid",
               split_column="fold", classes=["mass", "effusion"])
    meta = prepare_dataset(cfg, tmp_path / "prep")
    assert meta["classes"] == ["mass", "effusion"]  # explicit order; "age" and the rest ignored
    table, _ = load_split(tmp_path / "prep", "test")
    assert list(table.columns) == ["image_id", "patient_id", "mass", "effusion"]
    assert table["patient_id"].str.startswith("P").all()


def test_csv_without_patient_column_treats_images_as_patients_and_says_so(tmp_path, capsys):
    root = tmp_path / "ds"
    write_csv_dataset(root)
    _edit_csv(root / "labels.csv", lambda df: df.pop("patient_id"))
    prepare_dataset(_cfg("csv", root), tmp_path / "prep")
    assert "every image is its own patient" in capsys.readouterr().err
    table, _ = load_split(tmp_path / "prep", "val")
    assert (table["patient_id"] == table["image_id"]).all()


def _csv_split_file(root, split):
    return root / f"labels_{split}.csv"


@pytest.mark.parametrize("case, expect", [
    ("missing_class", ["labels_val.csv", "missing column", "mass"]),
    ("extra_class", ["labels_test.csv", "unexpected class column", "pneumonia"]),
    ("nan", ["labels_train.csv", "'nodule'", "0/1", "img/train/"]),
    ("non_binary_inferred", ["labels_train.csv", "'age'", "0/1", "data.options.classes"]),
    ("duplicate", ["labels_train.csv", "duplicate id", "img/train/"]),
    ("patient_leak", ["labels_val.csv", "patient", "P00001", "also appear in the train split"]),
    ("missing_images", ["2 listed image(s) missing", "labels_test.csv", "img/test/"]),
    ("truncated", ["could not be prepared", "img/val/", "unreadable or truncated"]),
    ("unsupported_mode", ["could not be prepared", "img/train/", "mode 'F'"]),
    ("missing_image_column", ["labels_train.csv", "missing column", "path"]),
    ("empty_path", ["labels_val.csv", "'path' is empty", "lines [4]"]),
])
def test_csv_bad_inputs_per_split_files(tmp_path, case, expect):
    root = tmp_path / "ds"
    frames = write_csv_dataset(root, per_split_files=True, extra_columns=case == "non_binary_inferred")
    if case == "missing_class":
        _edit_csv(_csv_split_file(root, "val"), lambda df: df.pop("mass"))
    elif case == "extra_class":
        _edit_csv(_csv_split_file(root, "test"), lambda df: df.insert(3, "pneumonia", "0"))
    elif case == "nan":
        _edit_csv(_csv_split_file(root, "train"), lambda df: df.__setitem__("nodule", df["nodule"].where(df.index != 5, "")))
    elif case == "duplicate":
        _edit_csv(_csv_split_file(root, "train"), lambda df: df.__setitem__("path", df["path"].where(df.index != 1, df["path"][0])))
    elif case == "patient_leak":
        _edit_csv(_csv_split_file(root, "val"), lambda df: df.__setitem__("patient_id", df["patient_id"].where(df.index != 0, "P00001")))
    elif case == "missing_images":
        for i in (0, 9):
            (root / frames["test"]["path"].iloc[i]).unlink()
    elif case == "truncated":
        path = root / frames["val"]["path"].iloc[4]
        path.write_bytes(path.read_bytes()[:80])
    elif case == "unsupported_mode":
        Image.fromarray(np.ones((36, 36), dtype=np.float32)).save(root / frames["train"]["path"].iloc[0], format="TIFF")
    elif case == "missing_image_column":
        _edit_csv(_csv_split_file(root, "train"), lambda df: df.pop("path"))
    elif case == "empty_path":
        _edit_csv(_csv_split_file(root, "val"), lambda df: df.__setitem__("path", df["path"].where(df.index != 2, "")))
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("csv", root), tmp_path / "prep")
    message = _one_line(err)
    for part in expect:
        assert part in message, message
    assert not (tmp_path / "prep").exists()


def test_csv_bad_split_value_names_rows(tmp_path):
    root = tmp_path / "ds"
    write_csv_dataset(root)
    _edit_csv(root / "labels.csv", lambda df: df.__setitem__("split", df["split"].where(df.index != 3, "holdout")))
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("csv", root), tmp_path / "prep")
    message = _one_line(err)
    assert "labels.csv" in message and "'split'" in message and "holdout" in message and "case0002_03" in message


def test_csv_without_label_file_says_what_it_expects(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(DataError, match="labels.csv .*labels_\\{train,val,test\\}.csv"):
        read_source("csv", tmp_path / "ds")


# --- medmnist -------------------------------------------------------------------------------


@pytest.mark.parametrize("size, workers", [(28, 1), (64, 2)])
def test_medmnist_npz_prepares_from_arrays(tmp_path, capsys, size, workers):
    arrays = write_medmnist(tmp_path / "mm", size=size)
    meta = prepare_dataset(_cfg("medmnist", tmp_path / "mm", workers=workers), tmp_path / "prep")
    assert meta["classes"] == list(CHESTMNIST_CLASSES) and meta["source"] == "medmnist"
    assert "no patient ids" in capsys.readouterr().err
    for split in ("train", "val", "test"):
        table, images = load_split(tmp_path / "prep", split)
        assert table["image_id"].tolist() == [f"{split}-{i}" for i in range(30)]
        assert (table["patient_id"] == table["image_id"]).all()
        assert np.array_equal(table[list(CHESTMNIST_CLASSES)].to_numpy(), arrays[split]["labels"])
        for i in (0, 17, 29):
            expected = _resized(Image.fromarray(arrays[split]["images"][i], "L"))
            assert np.array_equal(images[i], expected)


def test_medmnist_labels_are_named_in_medmnist_order():
    # medmnist INFO["chestmnist"]["label"]: 0 atelectasis ... 12 pleural (thickening), 13 hernia
    assert CHESTMNIST_CLASSES[0] == "Atelectasis" and CHESTMNIST_CLASSES[3] == "Infiltration"
    assert CHESTMNIST_CLASSES[12] == "Pleural Thickening" and CHESTMNIST_CLASSES[13] == "Hernia"
    assert len(CHESTMNIST_CLASSES) == 14


def test_npz_member_streams_rows_in_any_order(tmp_path):
    a = np.arange(50 * 4 * 4, dtype=np.uint8).reshape(50, 4, 4)
    np.savez_compressed(tmp_path / "x.npz", train_images=a)
    m = NpzMember(tmp_path / "x.npz", "train_images")
    assert len(m) == 50 and m.shape == (50, 4, 4)
    assert np.array_equal(m.read(10, 20), a[10:20])
    assert np.array_equal(m.read(40, 60), a[40:])
    assert np.array_equal(m.read(0, 3), a[:3])  # backwards: reopens
    m.close()


def test_medmnist_explicit_classes_name_another_label_width(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)  # RGB
        arrays[f"{split}_labels"] = np.array([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0], [0, 1]], dtype=np.uint8)
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "other.npz", **arrays)
    meta = prepare_dataset(_cfg("medmnist", tmp_path / "d", classes=["a", "b"], npz="other.npz"), tmp_path / "prep")
    assert meta["classes"] == ["a", "b"]
    _, images = load_split(tmp_path / "prep", "val")
    assert np.array_equal(images[1], _resized(Image.fromarray(arrays["val_images"][1], "RGB")))


def _rewrite_npz(path, fn):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    np.savez_compressed(path, **arrays)


@pytest.mark.parametrize("case, expect", [
    ("missing_key", ["chestmnist.npz", "missing array", "val_labels"]),
    ("label_width", ["chestmnist.npz", "train_labels has shape (30, 13)", "data.options.classes"]),
    ("non_binary", ["chestmnist.npz", "'Effusion'", "0/1", "test-2"]),
    ("count_mismatch", ["chestmnist.npz", "val_images has 29 images but val_labels 30 rows"]),
    ("float_images", ["chestmnist.npz", "train_images has dtype float32", "uint8"]),
    ("bad_shape", ["chestmnist.npz", "test_images has shape (30, 28)"]),
    ("not_zip", ["chestmnist.npz", "not a readable .npz"]),
    ("no_class_positive", ["chestmnist.npz", "'Hernia'", "no positive in the test split"]),
])
def test_medmnist_bad_inputs(tmp_path, case, expect):
    write_medmnist(tmp_path / "mm")
    path = tmp_path / "mm" / "chestmnist.npz"
    if case == "missing_key":
        _rewrite_npz(path, lambda a: a.pop("val_labels"))
    elif case == "label_width":
        _rewrite_npz(path, lambda a: a.__setitem__("train_labels", a["train_labels"][:, :13]))
    elif case == "non_binary":
        _rewrite_npz(path, lambda a: a["test_labels"].__setitem__((2, 2), 3))
    elif case == "count_mismatch":
        _rewrite_npz(path, lambda a: a.__setitem__("val_images", a["val_images"][:29]))
    elif case == "float_images":
        _rewrite_npz(path, lambda a: a.__setitem__("train_images", a["train_images"].astype(np.float32)))
    elif case == "bad_shape":
        _rewrite_npz(path, lambda a: a.__setitem__("test_images", a["test_images"][:, :, 0]))
    elif case == "not_zip":
        path.write_bytes(b"not a zip file at all")
    elif case == "no_class_positive":
        _rewrite_npz(path, lambda a: a["test_labels"].__setitem__((slice(None), 13), 0))
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("medmnist", tmp_path / "mm"), tmp_path / "prep")
    message = _one_line(err)
    for part in expect:
        assert part in message, message


def test_medmnist_needs_exactly_one_npz_or_a_configured_one(tmp_path):
    (tmp_path / "mm").mkdir()
    with pytest.raises(DataError, match="no .npz file"):
        read_source("medmnist", tmp_path / "mm")
    write_medmnist(tmp_path / "mm", size=28)
    write_medmnist(tmp_path / "mm", size=64)
    with pytest.raises(DataError, match="several .npz files"):
        read_source("medmnist", tmp_path / "mm")
    assert len(read_source("medmnist", tmp_path / "mm", SourceOptions(npz="chestmnist_64.npz")).splits["val"]) == 30
    with pytest.raises(DataError, match="nope.npz: .npz file not found"):
        read_source("medmnist", tmp_path / "mm", SourceOptions(npz="nope.npz"))


# --- options ------------------------------------------------------------------------------


def test_source_options_in_params(tmp_path):
    params = from_dict({"data": {"source": "csv", "options": {"labels": "labels_{split}.csv", "classes": ["a", "b"]}}})
    assert params.data.options.labels == "labels_{split}.csv" and params.data.options.classes == ["a", "b"]
    assert from_dict({}).data.options == SourceOptions()


@pytest.mark.parametrize("options, message", [
    ({"classes": ["a", "a"]}, "data.options.classes must be a list without duplicates"),
    ({"labels": "labels_{fold}.csv"}, "data.options.labels must be a path, or a pattern with exactly one {split}"),
    ({"npz": "chest.zip"}, "data.options.npz must be empty or a path to a .npz file"),
    ({"image_column": "id", "patient_column": "id"}, "distinct image_column, patient_column and split_column"),
    ({"classes": ["path"], "image_column": "path"}, "data.options.classes must be names other than"),
    ({"colour": "x"}, "unknown key data.options.colour"),
    ({"classes": [""]}, "data.options.classes must be non-empty class names"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError) as err:
        from_dict({"data": {"options": options}})
    assert message in str(err.value)


@pytest.mark.parametrize("source, options, message", [
    ("nih-cxr-lt", {"npz": "x.npz"}, "data.options.npz does not apply to data.source nih-cxr-lt"),
    ("medmnist", {"image_column": "file"}, "data.options.image_column does not apply to data.source medmnist"),
    ("mimic-cxr-lt", {"split_column": "fold"}, "data.options.split_column does not apply"),
    ("nih-cxr-lt", {"classes": ["No Finding"]}, "must list the 20 nih-cxr-lt classes in any order"),
])
def test_options_that_do_not_apply_are_refused(tmp_path, source, options, message):
    write_nih_dataset(tmp_path / "raw")
    with pytest.raises(ConfigError) as err:
        read_source(source, tmp_path / "raw", SourceOptions(**options))
    assert message in str(err.value)


def test_nih_label_files_can_live_in_another_folder(tmp_path):
    root = tmp_path / "raw"
    write_nih_dataset(root)
    (tmp_path / "labels").mkdir()
    for split in ("train", "val", "test"):
        name = f"miccai2023_nih-cxr-lt_labels_{split}.csv"
        shutil.move(root / name, tmp_path / "labels" / name)
    meta = prepare_dataset(_cfg("nih-cxr-lt", root, labels=str(tmp_path / "labels")), tmp_path / "prep")
    assert meta["counts"]["test"] == 24
    assert load_meta(tmp_path / "prep")["source"] == "nih-cxr-lt"
