"""prepare: layout reading, the uint8 cache, and one clear error per validation failure."""

import numpy as np
import pandas as pd
import pytest
from nih_layout import CLASSES, write_nih_dataset
from PIL import Image

from cxrprune.core.config import DataConfig
from cxrprune.core.errors import DataError
from cxrprune.datasets.prepare import load_meta, load_split, prepare_dataset


def _cfg(root, size=32):
    return DataConfig(name="fixture", source="nih-cxr-lt", root=str(root), image_size=size, workers=1)


def test_prepare_writes_contract_tables_and_cache(tmp_path):
    frames = write_nih_dataset(tmp_path / "raw")
    meta = prepare_dataset(_cfg(tmp_path / "raw"), tmp_path / "prep")
    assert meta["classes"] == CLASSES and meta["counts"] == {"train": 24, "val": 24, "test": 24}
    labels, images = load_split(tmp_path / "prep", "test")
    assert list(labels.columns) == ["image_id", "patient_id", *CLASSES]
    assert labels["image_id"].tolist() == frames["test"]["id"].tolist()
    assert labels["patient_id"].iloc[0] == frames["test"]["subj_id"].iloc[0]  # zero padding kept
    assert all(labels[c].dtype == np.int8 for c in CLASSES)
    assert images.dtype == np.uint8 and images.shape == (24, 32, 32)
    # The cache holds the resized PNG, pixel for pixel as PIL resizes it.
    first = Image.open(tmp_path / "raw" / "images" / labels["image_id"].iloc[0])
    expected = np.asarray(first.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0))
    assert np.array_equal(images[0], expected)
    assert load_meta(tmp_path / "prep")["image_size"] == 32


def test_parallel_and_serial_caches_are_identical(tmp_path):
    write_nih_dataset(tmp_path / "raw", per_split=140)
    prepare_dataset(_cfg(tmp_path / "raw"), tmp_path / "a")
    cfg = DataConfig(name="fixture", root=str(tmp_path / "raw"), image_size=32, workers=2)
    prepare_dataset(cfg, tmp_path / "b")
    for split in ("train", "val", "test"):
        assert np.array_equal(load_split(tmp_path / "a", split)[1], load_split(tmp_path / "b", split)[1])


def _corrupt(root, split, fn):
    path = root / f"miccai2023_nih-cxr-lt_labels_{split}.csv"
    df = pd.read_csv(path, dtype={"id": str, "subj_id": str})
    fn(df)
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, expect", [
    ("missing_class", ["labels_train.csv", "missing column", "Hernia"]),
    ("non_binary", ["labels_val.csv", "'Effusion'", "0/1"]),
    ("nan", ["labels_val.csv", "'Effusion'", "0/1"]),
    ("duplicate", ["labels_train.csv", "duplicate id", "_000.png"]),
    ("patient_leak", ["labels_test.csv", "patient", "also appear in the train split"]),
    ("no_test_positive", ["labels_test.csv", "Pneumomediastinum", "no positive"]),
    ("missing_image", ["missing", "images"]),
    ("truncated_image", ["unreadable or truncated"]),
    ("extra_column", ["labels_train.csv", "unexpected column", "Fracture"]),
])
def test_validation_errors_name_file_and_offender(tmp_path, case, expect):
    root = tmp_path / "raw"
    frames = write_nih_dataset(root)
    if case == "missing_class":
        _corrupt(root, "train", lambda df: df.pop("Hernia"))
    elif case == "non_binary":
        _corrupt(root, "val", lambda df: df.__setitem__("Effusion", df["Effusion"].replace(1, 2)))
    elif case == "nan":
        _corrupt(root, "val", lambda df: df.__setitem__("Effusion", df["Effusion"].astype(float).where(df.index > 0)))
    elif case == "duplicate":
        _corrupt(root, "train", lambda df: df.__setitem__("id", df["id"].where(df.index != 1, df["id"][0])))
    elif case == "patient_leak":
        leak = frames["train"]["subj_id"].iloc[0]
        _corrupt(root, "test", lambda df: df.__setitem__("subj_id", df["subj_id"].where(df.index != 0, leak)))
    elif case == "no_test_positive":
        _corrupt(root, "test", lambda df: df.__setitem__("Pneumomediastinum", 0))
    elif case == "missing_image":
        (root / "images" / frames["val"]["id"].iloc[3]).unlink()
    elif case == "truncated_image":
        path = root / "images" / frames["test"]["id"].iloc[2]
        path.write_bytes(path.read_bytes()[:60])
    elif case == "extra_column":
        _corrupt(root, "train", lambda df: df.insert(3, "Fracture", 0))
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg(root), tmp_path / "prep")
    message = str(err.value)
    assert "\n" not in message
    for part in expect:
        assert part in message, message
    assert not (tmp_path / "prep").exists(), "a failed prepare must leave no partial output"


def test_failed_prepare_keeps_the_previous_output(tmp_path):
    root = tmp_path / "raw"
    frames = write_nih_dataset(root)
    prepare_dataset(_cfg(root), tmp_path / "prep")
    before = (tmp_path / "prep" / "images_test.npy").read_bytes()
    (root / "images" / frames["test"]["id"].iloc[0]).write_bytes(b"not a png")
    with pytest.raises(DataError):
        prepare_dataset(_cfg(root), tmp_path / "prep")
    assert (tmp_path / "prep" / "images_test.npy").read_bytes() == before


def test_sixteen_bit_and_rgb_images_are_converted(tmp_path):
    root = tmp_path / "raw"
    frames = write_nih_dataset(root)
    ids = frames["train"]["id"]
    Image.fromarray((np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)).save(root / "images" / ids[0])
    Image.new("RGB", (40, 40), (255, 0, 0)).save(root / "images" / ids[1])
    prepare_dataset(_cfg(root), tmp_path / "prep")
    _, images = load_split(tmp_path / "prep", "train")
    assert images[0].max() >= 250 and images[0].min() <= 5  # full 8-bit range after scaling
    assert np.all(images[1] == 76)  # ITU-R 601 luma of pure red


def test_damaged_cache_is_a_clear_error(tmp_path):
    write_nih_dataset(tmp_path / "raw")
    prepare_dataset(_cfg(tmp_path / "raw"), tmp_path / "prep")
    np.save(tmp_path / "prep" / "images_val.npy", np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="rerun `dvc repro prepare"):
        load_split(tmp_path / "prep", "val")
