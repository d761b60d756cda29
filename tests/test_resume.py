"""Resumable preparation: an interrupted or failed prepare keeps its finished chunks, the
next run decodes only the rest, and the result equals an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nih_layout import write_nih_dataset
from source_layouts import write_medmnist

import cxrprune.datasets.prepare as prepare
from cxrprune.core.config import DataConfig
from cxrprune.core.errors import DataError
from cxrprune.datasets.prepare import load_split, partial_dir, prepare_dataset

CHUNK = 4
PER_SPLIT = 24  # 6 chunks per split, 18 in all
TOTAL = 3 * PER_SPLIT


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(prepare, "_CHUNK", CHUNK)


def _cfg(root, workers=1, size=32, source="nih-cxr-lt"):
    return DataConfig(name="fixture", source=source, root=str(root), image_size=size, workers=workers)


class Counter:
    """Wraps a decoding function and counts its calls (serial path: same process)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args):
        self.calls.append(args[0] if isinstance(args[0], str) else args[2])
        return self.fn(*args)


def _interrupt_after(monkeypatch, n_chunks):
    seen = []

    def hook(cache, index):
        seen.append((cache.name, index))
        if len(seen) == n_chunks:
            raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_after_chunk", hook)
    return seen


def _assert_same_output(a: Path, b: Path):
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for split in ("train", "val", "test"):
        la, ia = load_split(a, split)
        lb, ib = load_split(b, split)
        pd.testing.assert_frame_equal(la, lb)
        assert np.array_equal(ia, ib)
        assert (a / f"images_{split}.npy").read_bytes() == (b / f"images_{split}.npy").read_bytes()
    assert (a / "meta.json").read_text() == (b / "meta.json").read_text()


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "raw"
    frames = write_nih_dataset(root, per_split=PER_SPLIT)
    prepare_dataset(_cfg(root), tmp_path / "reference")  # uninterrupted
    return root, frames


def test_interrupted_prepare_resumes_without_decoding_finished_chunks(tmp_path, monkeypatch, dataset, capsys):
    root, _ = dataset
    out = tmp_path / "prep"
    _interrupt_after(monkeypatch, 8)  # all 6 train chunks and 2 val chunks
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(_cfg(root), out)
    assert not out.exists()
    work = partial_dir(out)
    assert work == tmp_path / ".prep.partial" and (work / "fingerprint.json").is_file()
    assert (work / "done_train.bin").read_bytes() == b"\x01" * 6
    assert (work / "done_val.bin").read_bytes() == b"\x01\x01" + b"\x00" * 4

    monkeypatch.setattr(prepare, "_after_chunk", lambda cache, index: None)
    counter = Counter(prepare.load_image)
    monkeypatch.setattr(prepare, "load_image", counter)
    prepare_dataset(_cfg(root), out)
    assert len(counter.calls) == TOTAL - 8 * CHUNK  # only the unfinished chunks
    assert "resuming, 8 of 24 images already prepared" in capsys.readouterr().err
    assert not work.exists()
    _assert_same_output(out, tmp_path / "reference")


def test_a_failing_image_keeps_the_work_and_only_its_chunk_is_redone(tmp_path, monkeypatch, dataset):
    root, frames = dataset
    out = tmp_path / "prep"
    bad = root / "images" / frames["val"]["id"].iloc[9]  # val chunk 2
    original = bad.read_bytes()
    bad.write_bytes(original[:70])
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg(root), out)
    message = str(err.value)
    assert "\n" not in message and "1 image(s) could not be prepared" in message
    assert str(bad) in message and "unreadable or truncated" in message
    assert str(partial_dir(out)) in message and "rerun to resume" in message
    assert not out.exists()
    assert (partial_dir(out) / "done_val.bin").read_bytes() == b"\x01\x01\x00\x01\x01\x01"
    assert (partial_dir(out) / "done_test.bin").read_bytes() == b"\x01" * 6  # later chunks were still done

    bad.write_bytes(original)
    counter = Counter(prepare.load_image)
    monkeypatch.setattr(prepare, "load_image", counter)
    prepare_dataset(_cfg(root), out)
    assert len(counter.calls) == CHUNK and str(bad) in counter.calls
    _assert_same_output(out, tmp_path / "reference")


def test_a_previous_output_survives_a_failed_rerun(tmp_path, dataset):
    root, frames = dataset
    out = tmp_path / "reference"
    before = (out / "images_test.npy").read_bytes()
    (root / "images" / frames["test"]["id"].iloc[0]).write_bytes(b"not a png")
    with pytest.raises(DataError):
        prepare_dataset(_cfg(root), out)
    assert (out / "images_test.npy").read_bytes() == before


@pytest.mark.parametrize("change", ["label_file", "image_size"])
def test_changed_inputs_start_over(tmp_path, monkeypatch, dataset, capsys, change):
    root, _ = dataset
    out = tmp_path / "prep"
    _interrupt_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(_cfg(root), out)
    monkeypatch.setattr(prepare, "_after_chunk", lambda cache, index: None)
    size = 32
    if change == "label_file":
        path = root / "miccai2023_nih-cxr-lt_labels_train.csv"
        df = pd.read_csv(path, dtype={"id": str, "subj_id": str})
        df.loc[0, "Hernia"] = 1 - df.loc[0, "Hernia"]
        df.to_csv(path, index=False)
    else:
        size = 40
    counter = Counter(prepare.load_image)
    monkeypatch.setattr(prepare, "load_image", counter)
    meta = prepare_dataset(_cfg(root, size=size), out)
    assert len(counter.calls) == TOTAL
    err = capsys.readouterr().err
    assert "inputs changed" in err and "starting over" in err
    assert meta["image_size"] == size and load_split(out, "val")[1].shape == (PER_SPLIT, size, size)


def test_parallel_prepare_resumes_too(tmp_path, monkeypatch, dataset):
    root, _ = dataset
    out = tmp_path / "prep"
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(_cfg(root, workers=2), out)
    done = (partial_dir(out) / "done_train.bin").read_bytes()
    assert 3 <= done.count(1) < 6
    monkeypatch.setattr(prepare, "_after_chunk", lambda cache, index: None)
    prepare_dataset(_cfg(root, workers=2), out)
    _assert_same_output(out, tmp_path / "reference")


def test_a_hard_kill_leaves_a_resumable_work_folder(tmp_path, dataset):
    """The process dies without any cleanup (os._exit) right after its 7th chunk."""
    root, _ = dataset
    out = tmp_path / "prep"
    script = textwrap.dedent(f"""
        import os, cxrprune.datasets.prepare as p
        from cxrprune.core.config import DataConfig
        p._CHUNK = {CHUNK}
        n = []
        def hook(cache, index):
            n.append(index)
            if len(n) == 7:
                os._exit(9)
        p._after_chunk = hook
        p.prepare_dataset(DataConfig(name="fixture", root={str(root)!r}, image_size=32, workers=1), {str(out)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert (partial_dir(out) / "done_val.bin").read_bytes() == b"\x01" + b"\x00" * 5
    counter = Counter(prepare.load_image)
    original = prepare.load_image
    prepare.load_image = counter
    try:
        prepare_dataset(_cfg(root), out)
    finally:
        prepare.load_image = original
    assert len(counter.calls) == TOTAL - 7 * CHUNK
    _assert_same_output(out, tmp_path / "reference")


def test_array_source_resumes(tmp_path, monkeypatch):
    write_medmnist(tmp_path / "mm", size=28, per_split=30)  # 8 chunks per split (last one short)
    cfg = _cfg(tmp_path / "mm", source="medmnist")
    prepare_dataset(cfg, tmp_path / "reference")
    _interrupt_after(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(cfg, tmp_path / "prep")
    monkeypatch.setattr(prepare, "_after_chunk", lambda cache, index: None)
    counter = Counter(prepare.array_image)
    monkeypatch.setattr(prepare, "array_image", counter)
    prepare_dataset(cfg, tmp_path / "prep")
    assert len(counter.calls) == 90 - 30 - 2 * CHUNK  # 8 train chunks (30 rows) + 2 val chunks were done
    assert not any("train_images[" in name for name in counter.calls)  # the train chunks were done
    _assert_same_output(tmp_path / "prep", tmp_path / "reference")


def test_a_damaged_cache_file_is_redone_despite_its_done_marks(tmp_path, monkeypatch, dataset):
    root, _ = dataset
    out = tmp_path / "prep"
    _interrupt_after(monkeypatch, 9)  # train done, val half done
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(_cfg(root), out)
    cache = partial_dir(out) / "images_train.npy"
    cache.write_bytes(cache.read_bytes()[:50])  # header torn
    monkeypatch.setattr(prepare, "_after_chunk", lambda cache, index: None)
    counter = Counter(prepare.load_image)
    monkeypatch.setattr(prepare, "load_image", counter)
    prepare_dataset(_cfg(root), out)
    assert len(counter.calls) == TOTAL - 3 * CHUNK  # train redone, the 3 finished val chunks kept
    _assert_same_output(out, tmp_path / "reference")
