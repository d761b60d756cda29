"""Dataset sources: read a dataset's label files in its own layout into one common form.

A source returns, per split, a DataFrame with ``image_id`` (str), ``patient_id`` (str),
``path`` (the image file, or for array sources a locator used in messages) and one 0/1
column per class in the dataset's canonical order. Everything after this point
(validation, the image cache, training) is shared by all sources, so the synthetic default
exercises the same code path as the real datasets.

``data.source`` selects the reader (its entry in :data:`cxrprune.core.catalog.SOURCES` names
it and the ``data.options`` keys it reads); ``data.root`` is the dataset folder and
``data.options`` (:class:`~cxrprune.core.config.SourceOptions`) adjusts the layout. A relative
path in ``data.options`` is relative to ``data.root``.

nih-cxr-lt (:func:`read_nih_cxr_lt`)::

    <root>/images/00000001_000.png ...            NIH ChestX-ray14 PNGs (1024x1024, 8-bit)
    <root>/miccai2023_nih-cxr-lt_labels_train.csv  id,<20 classes>,subj_id (also _val, _test)

mimic-cxr-lt (:func:`read_mimic_cxr_lt`)::

    <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg ...   the MIMIC-CXR-JPG 2.0.0 tree
    <labels>/miccai2023_mimic-cxr-lt_labels_{train,val,test}.csv
        path (relative to <root>), subject_id (or subj_id), <19 classes>, other metadata

csv (:func:`read_csv_dataset`), any multi-label image dataset::

    <root>/<any/relative/path>.png|.jpg ...          8/16-bit gray or RGB images
    <root>/labels.csv        path,patient_id,split,<class columns>      (one file), or
    <root>/labels_{train,val,test}.csv   path,patient_id,<class columns> (one per split)

medmnist (:func:`read_medmnist`), MedMNIST's ChestMNIST::

    <root>/chestmnist.npz (or chestmnist_64.npz, _128, _224): arrays train_images (N, S, S)
    uint8, train_labels (N, 14) 0/1, val_images, val_labels, test_images, test_labels.
"""

from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from cxrprune.core import catalog
from cxrprune.core.classes import MIMIC_CXR_LT_CLASSES, NIH_CXR_LT_CLASSES
from cxrprune.core.config import SourceOptions
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.core.layout import producer

SPLITS = ("train", "val", "test")

NIH_LABEL_FILE = "miccai2023_nih-cxr-lt_labels_{split}.csv"
MIMIC_LABEL_FILE = "miccai2023_mimic-cxr-lt_labels_{split}.csv"

# MedMNIST's ChestMNIST label order (medmnist INFO["chestmnist"]["label"] 0..13:
# atelectasis, cardiomegaly, effusion, infiltration, mass, nodule, pneumonia, pneumothorax,
# consolidation, edema, emphysema, fibrosis, pleural, hernia), named as in NIH-CXR-LT.
CHESTMNIST_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural Thickening", "Hernia",
)

# Finding names of the CXR label sets; a column with one of these names that a CXR-LT
# layout does not list is a wrong or extra class column, not metadata.
_KNOWN_FINDINGS = {c.lower().replace("_", " ") for c in
                   (*NIH_CXR_LT_CLASSES, *MIMIC_CXR_LT_CLASSES, *CHESTMNIST_CLASSES, "Lung Opacity",
                    "Lung Lesion", "Fracture", "Support Devices", "Pleural Other", "Pleural Effusion",
                    "Enlarged Cardiomediastinum")}

_PATIENT_COLUMNS = ("patient_id", "subject_id", "subj_id")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                  "validation": "val", "test": "test", "testing": "test"}


class ArraySource(Protocol):
    """Images held in an array instead of files (rows in the order of the split's table)."""

    shape: tuple[int, ...]  # (N, H, W) or (N, H, W, 1|3)
    dtype: np.dtype

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class SourceData:
    classes: list[str]
    splits: dict[str, pd.DataFrame]  # split -> image_id, patient_id, path, classes...
    label_files: dict[str, Path]  # split -> the file its labels came from (for messages)
    truth: pd.DataFrame | None = None  # synthetic ground truth, when the dataset has it
    # split -> pixel arrays, for sources whose images are not files (medmnist); then
    # ``path`` only names each image's place in the array, for messages.
    arrays: dict[str, ArraySource] | None = None
    notes: tuple[str, ...] = field(default=())  # caveats worth printing (e.g. synthesised patient ids)


def read_source(source: str, root: str | Path, options: SourceOptions | None = None) -> SourceData:
    """Read ``source`` at ``root`` with ``options`` (default: every option empty)."""
    options = options if options is not None else SourceOptions()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; set data.root in params.yaml "
                        f"(for the synthetic default run `dvc repro {producer('synthetic_root')}`)")
    spec = catalog.SOURCES.get(source)
    if spec is None:
        raise DataError(f"data.source {source!r} is not supported by this version")
    _check_options(spec, options)
    return catalog.load(spec.implementation)(root, options)


def _check_options(spec: catalog.SourceSpec, options) -> None:
    """The options ``spec`` does not read must stay empty, so a typo'd setup is not ignored."""
    for key in (f.name for f in fields(SourceOptions)):
        if getattr(options, key) and key not in spec.options:
            raise ConfigError(f"data.options.{key} does not apply to data.source {spec.name}; it reads "
                              f"{', '.join(sorted(spec.options)) or 'none of them'} (remove the key)")


# --- nih-cxr-lt ---------------------------------------------------------------------------


def read_nih_cxr_lt(root: Path, options=None) -> SourceData:
    """NIH ChestX-ray14 ``images/`` + ``miccai2023_nih-cxr-lt_labels_{split}.csv``.

    Layout: ``<root>/images/<id>`` (the PNG file names of the ``id`` column) and the three
    label CSVs in ``<root>`` (or in ``data.options.labels``: a folder, or a pattern with
    ``{split}``). Header ``id,<the 20 classes>,subj_id``; ``subj_id`` is read as a string
    so its zero padding is kept; class values 0/1; no other column. ``synthetic_truth.csv``
    in ``<root>`` (the synthetic default only) is read as ground truth.
    """
    classes = _canonical_or_reordered(NIH_CXR_LT_CLASSES, options, "nih-cxr-lt")
    files = label_file_paths(root, getattr(options, "labels", ""), NIH_LABEL_FILE)
    splits = {split: read_nih_label_file(path, root, classes) for split, path in files.items()}
    truth_path = root / "synthetic_truth.csv"
    truth = _read_csv(truth_path, dtype={"id": str}) if truth_path.exists() else None
    if truth is not None:
        _require_columns(truth, truth_path, ["id", "split", "flipped", "flipped_class", "quality", "degradation"])
        truth = truth.rename(columns={"id": "image_id"})
        truth["flipped_class"] = truth["flipped_class"].fillna("").astype(str)
    return SourceData(classes, splits, files, truth)


def read_nih_label_file(path: Path, root: Path, classes: list[str] | None = None) -> pd.DataFrame:
    """One NIH-CXR-LT label CSV as ``image_id, patient_id, path, <classes>``."""
    classes = list(classes or NIH_CXR_LT_CLASSES)
    df = _read_csv(path, dtype={"id": str, "subj_id": str})
    _require_columns(df, path, ["id", "subj_id", *classes])
    extra = [c for c in df.columns if c not in ("id", "subj_id", *classes)]
    if extra:
        raise DataError(f"{path}: unexpected column(s) {extra[:5]}; the NIH-CXR-LT layout has "
                        f"id, the 20 classes and subj_id")
    _require_values(df, path, ["id", "subj_id"], "id")
    ids = df["id"].astype(str)
    out = pd.DataFrame({
        "image_id": ids,
        "patient_id": df["subj_id"].astype(str),
        "path": [str(root / "images" / i) for i in ids],
    })
    return pd.concat([out, binary_labels(df, classes, path)], axis=1)


# --- mimic-cxr-lt -------------------------------------------------------------------------


def read_mimic_cxr_lt(root: Path, options=None) -> SourceData:
    """MIMIC-CXR-JPG + ``miccai2023_mimic-cxr-lt_labels_{split}.csv``.

    Layout: ``<root>`` is the mimic-cxr-jpg root (the folder holding ``files/``); the
    three label CSVs are in ``<root>`` or in ``data.options.labels`` (a folder, or a
    pattern with ``{split}``). Each CSV has a ``path`` column relative to ``<root>``
    (``data.options.image_column`` to use another; it is also the image id), a patient
    column (``subject_id`` or ``subj_id``, whichever exists, or
    ``data.options.patient_column``; read as a string), the 19 class columns (0/1) and
    any metadata columns (``study_id``, ``dicom_id``, ...). A further 0/1 column, or one
    named after a finding, is refused as an extra class column.
    """
    classes = _canonical_or_reordered(MIMIC_CXR_LT_CLASSES, options, "mimic-cxr-lt")
    files = label_file_paths(root, getattr(options, "labels", ""), MIMIC_LABEL_FILE)
    splits = {split: read_mimic_label_file(path, root, classes, getattr(options, "image_column", ""),
                                           getattr(options, "patient_column", ""))
              for split, path in files.items()}
    return SourceData(classes, splits, files)


def read_mimic_label_file(path: Path, root: Path, classes: list[str] | None = None, image_column: str = "",
                          patient_column: str = "") -> pd.DataFrame:
    """One MIMIC-CXR-LT label CSV as ``image_id, patient_id, path, <classes>``."""
    classes = list(classes or MIMIC_CXR_LT_CLASSES)
    image_column = image_column or "path"
    df = _read_csv(path, dtype=str)
    patient_column = _patient_column(df, path, patient_column, ("subject_id", "subj_id"), required=True)
    _require_columns(df, path, [image_column, patient_column, *classes])
    others = [c for c in df.columns if c not in (image_column, patient_column, *classes)]
    extra = [c for c in others if _looks_like_class(df[c], c)]
    if extra:
        raise DataError(f"{path}: unexpected class column(s) {extra[:5]}; the MIMIC-CXR-LT layout has exactly "
                        f"the 19 classes {list(MIMIC_CXR_LT_CLASSES)[:3]}... (remove the column, or use "
                        f"data.source csv for another label set)")
    _require_values(df, path, [image_column, patient_column], image_column)
    rel = df[image_column].astype(str)
    out = pd.DataFrame({"image_id": rel, "patient_id": df[patient_column].astype(str),
                        "path": [str(_resolve(root, p)) for p in rel]})
    return pd.concat([out, binary_labels(df, classes, path, image_column)], axis=1)


def _looks_like_class(col: pd.Series, name: str) -> bool:
    if str(name).strip().lower().replace("_", " ") in _KNOWN_FINDINGS:
        return True
    values = pd.to_numeric(col, errors="coerce")
    return len(col) > 0 and bool(values.isin([0, 1]).all())


# --- csv ----------------------------------------------------------------------------------


def read_csv_dataset(root: Path, options=None) -> SourceData:
    """Any multi-label image dataset: an image folder and one CSV, or one CSV per split.

    Layout: images anywhere under ``<root>`` (PNG/JPEG/any format Pillow reads; 8-bit or
    16-bit gray or RGB), and either

    - one CSV (``data.options.labels``, default ``<root>/labels.csv``) with a split column
      (``data.options.split_column``, default ``split``; values ``train``, ``val`` (also
      ``valid``, ``validate``, ``validation``) and ``test``), or
    - one CSV per split (``data.options.labels`` a pattern with ``{split}``, default
      ``<root>/labels_{split}.csv`` when ``labels.csv`` does not exist).

    Columns: the image path relative to ``<root>`` (``data.options.image_column``, default
    ``path``; it is also the image id), an optional patient column
    (``data.options.patient_column``, default ``patient_id``/``subject_id``/``subj_id`` if
    present; without one every image is its own patient and patient-disjointness of the
    splits cannot be checked), and the class columns (0/1): ``data.options.classes`` in
    that order (other columns are ignored), or, when empty, every remaining column in file
    order (then every one of them must be 0/1).
    """
    image_column = getattr(options, "image_column", "") or "path"
    split_column = getattr(options, "split_column", "") or "split"
    explicit = list(getattr(options, "classes", []) or [])
    labels = getattr(options, "labels", "")
    single = _single_csv(root, labels)
    if single is not None:
        df = _read_csv(single, dtype=str)
        _require_columns(df, single, [image_column, split_column])
        frames, files = _split_rows(df, single, split_column, image_column), dict.fromkeys(SPLITS, single)
    else:
        files = label_file_paths(root, labels or "labels_{split}.csv", "labels_{split}.csv")
        frames = {split: _read_csv(path, dtype=str) for split, path in files.items()}
    notes: list[str] = []
    first = files["train"]
    patient = _patient_column(frames["train"], first, getattr(options, "patient_column", ""), _PATIENT_COLUMNS,
                              required=False)
    if patient is None:
        notes.append(f"{first}: no patient column ({', '.join(_PATIENT_COLUMNS)} or data.options.patient_column); "
                     f"every image is its own patient, so patient-disjoint splits cannot be checked")
    reserved = {image_column, split_column, *([patient] if patient else [])}
    if explicit:
        classes = explicit
    else:
        classes = [c for c in frames["train"].columns if c not in reserved]
        if not classes:
            raise DataError(f"{first}: no class columns besides {sorted(reserved)}; add 0/1 class columns or "
                            f"list them in data.options.classes")
    splits = {}
    for split in SPLITS:
        df, path = frames[split], files[split]
        _require_columns(df, path, [image_column, *([patient] if patient else []), *classes])
        if not explicit and single is None:
            extra = [c for c in df.columns if c not in reserved and c not in classes]
            if extra:
                raise DataError(f"{path}: unexpected class column(s) {extra[:5]} that {first.name} does not "
                                f"have; every split's file needs the same class columns (or list the classes "
                                f"in data.options.classes)")
        _require_values(df, path, [image_column, *([patient] if patient else [])], image_column)
        rel = df[image_column].astype(str)
        out = pd.DataFrame({"image_id": rel.to_numpy(),
                            "patient_id": (df[patient].astype(str) if patient else rel).to_numpy(),
                            "path": [str(_resolve(root, p)) for p in rel]})
        hint = "" if explicit else ("; with inferred classes every column other than the image, patient and "
                                    "split columns is a class: list the classes in data.options.classes")
        try:
            y = binary_labels(df, classes, path, image_column)
        except DataError as exc:
            raise DataError(f"{exc}{hint}") from None
        splits[split] = pd.concat([out, y.reset_index(drop=True)], axis=1)
    return SourceData(classes, splits, files, notes=tuple(notes))


def _single_csv(root: Path, labels: str) -> Path | None:
    """The one label file of a csv dataset, or None when there is one per split."""
    if "{split}" in labels:
        return None
    if labels:
        path = _resolve(root, labels)
        if path.is_dir():
            raise DataError(f"{path}: data.options.labels must be a CSV file or a pattern with {{split}}, "
                            f"not a folder")
        if not path.is_file():
            raise DataError(f"{path}: label file not found (data.options.labels)")
        return path
    default = root / "labels.csv"
    if default.is_file():
        return default
    if not any((root / f"labels_{s}.csv").is_file() for s in SPLITS):
        raise DataError(f"{root}: no label file; the csv layout needs labels.csv (with a split column) or "
                        f"labels_{{train,val,test}}.csv, or set data.options.labels")
    return None


def _split_rows(df: pd.DataFrame, path: Path, split_column: str, id_column: str) -> dict[str, pd.DataFrame]:
    raw = df[split_column]
    split = raw.str.strip().str.lower().map(_SPLIT_ALIASES)
    bad = split.isna()
    if bad.any():
        values = sorted({str(v) for v in raw[bad].tolist()})[:5]
        ids = df.loc[bad, id_column].astype(str).head(3).tolist()
        raise DataError(f"{path}: column {split_column!r} must hold train, val or test; {int(bad.sum())} row(s) "
                        f"do not, e.g. ids {ids} with values {values}")
    return {s: df[split == s].drop(columns=[split_column]).reset_index(drop=True) for s in SPLITS}


# --- medmnist -----------------------------------------------------------------------------


def read_medmnist(root: Path, options=None) -> SourceData:
    """MedMNIST's ChestMNIST ``.npz`` (any size: 28, 64, 128, 224).

    Layout: one ``.npz`` file (``data.options.npz``, default the only ``*.npz`` in
    ``<root>``) holding ``{train,val,test}_images`` (uint8 ``(N, S, S)``, or
    ``(N, S, S, 1|3)``) and ``{train,val,test}_labels`` (``(N, 14)`` 0/1 in MedMNIST's order,
    :data:`CHESTMNIST_CLASSES`; another width needs ``data.options.classes``). Images come
    from the arrays, not from files; they are streamed from the file, not loaded whole.
    ChestMNIST keeps NIH's official patient-disjoint split but drops the patient ids, so
    every image is its own patient with the synthesised id ``<split>-<index>`` (also the
    image id) and patient-disjointness cannot be checked.
    """
    path = _npz_path(root, getattr(options, "npz", ""))
    explicit = list(getattr(options, "classes", []) or [])
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    with npz:
        needed = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [k for k in needed if k not in npz.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; a MedMNIST file holds {needed} "
                            f"(found {sorted(npz.files)})")
        labels = {}
        for split in SPLITS:
            try:
                labels[split] = np.asarray(npz[f"{split}_labels"])
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                raise DataError(f"{path}: array {split}_labels is damaged ({exc})") from None
    classes = explicit or list(CHESTMNIST_CLASSES)
    splits, arrays = {}, {}
    for split in SPLITS:
        y = labels[split]
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != len(classes):
            hint = "" if explicit else " (ChestMNIST has 14; name other label sets in data.options.classes)"
            raise DataError(f"{path}: {split}_labels has shape {labels[split].shape}, expected (N, {len(classes)})"
                            f"{hint}")
        images = NpzMember(path, f"{split}_images")
        if len(images) != len(y):
            raise DataError(f"{path}: {split}_images has {len(images)} images but {split}_labels {len(y)} rows")
        ids = [f"{split}-{i}" for i in range(len(y))]
        df = pd.DataFrame(y, columns=classes)
        df.insert(0, "id", ids)
        out = pd.DataFrame({"image_id": ids, "patient_id": ids,
                            "path": [f"{path}:{split}_images[{i}]" for i in range(len(y))]})
        splits[split] = pd.concat([out, binary_labels(df, classes, path)], axis=1)
        arrays[split] = images
    note = (f"{path}: MedMNIST files have no patient ids; every image is its own patient "
            f"(<split>-<index>), so patient-disjoint splits cannot be checked (ChestMNIST keeps NIH's "
            f"official patient-disjoint split)")
    return SourceData(classes, splits, dict.fromkeys(SPLITS, path), arrays=arrays, notes=(note,))


def _npz_path(root: Path, npz: str) -> Path:
    if npz:
        path = _resolve(root, npz)
        if not path.is_file():
            raise DataError(f"{path}: .npz file not found (data.options.npz)")
        return path
    found = sorted(root.glob("*.npz"))
    if len(found) != 1:
        what = "no .npz file" if not found else f"several .npz files {[p.name for p in found]}"
        raise DataError(f"{root}: {what}; put the MedMNIST file (e.g. chestmnist.npz) there or set "
                        f"data.options.npz")
    return found[0]


class NpzMember:
    """One array of an ``.npz`` file, read in row ranges without loading it whole.

    Rows are read through one decompressing stream, so reads should go forward; a read
    before the stream's position reopens it. Not shared between processes.
    """

    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key
        self._zip: zipfile.ZipFile | None = None
        self._stream = None
        self._row = 0
        try:
            with zipfile.ZipFile(self.path) as zf:
                info = zf.getinfo(f"{key}.npy")
                self.crc, self.file_size = info.CRC, info.file_size
                with zf.open(info) as f:
                    self.shape, self.dtype, self._header = _npy_header(f, self.path, key)
        except KeyError:
            raise DataError(f"{self.path}: no array {key!r}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{self.path}: cannot read array {key!r} ({exc})") from None
        if len(self.shape) not in (3, 4) or (len(self.shape) == 4 and self.shape[3] not in (1, 3)):
            raise DataError(f"{self.path}: {key} has shape {self.shape}; images must be (N, H, W) or (N, H, W, 1|3)")
        if self.dtype not in (np.dtype(np.uint8), np.dtype("<u2"), np.dtype(">u2")):
            raise DataError(f"{self.path}: {key} has dtype {self.dtype}; images must be uint8 (or uint16)")
        self._row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def describe(self) -> str:
        return f"{self.path.name}:{self.key}:crc={self.crc:08x}:size={self.file_size}"

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, len(self))
        if self._stream is None or start < self._row:
            self.close()
            self._zip = zipfile.ZipFile(self.path)
            self._stream = self._zip.open(f"{self.key}.npy")
            self._stream.read(self._header)
            self._row = 0
        try:
            _read_exact(self._stream, (start - self._row) * self._row_bytes, discard=True)
            data = _read_exact(self._stream, (stop - start) * self._row_bytes)
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            self.close()
            raise DataError(f"{self.path}: {self.key} rows {start}..{stop - 1} are unreadable ({exc})") from None
        self._row = stop
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._zip is not None:
            self._zip.close()
        self._stream = self._zip = None

    def __getstate__(self):  # the open stream cannot travel to another process
        state = dict(self.__dict__)
        state.update(_zip=None, _stream=None, _row=0)
        return state


def _npy_header(f, path: Path, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # pragma: no cover - numpy writes only these
        raise DataError(f"{path}: {key} has an unknown .npy version {version}")
    if fortran and len(shape) > 1:
        raise DataError(f"{path}: {key} is stored in Fortran order; save it C-ordered (np.ascontiguousarray)")
    return tuple(int(s) for s in shape), np.dtype(dtype), int(f.tell())


def _read_exact(stream, n: int, discard: bool = False) -> bytes:
    parts, left = [], n
    while left > 0:
        block = stream.read(min(left, 1 << 24))
        if not block:
            raise EOFError(f"file ends {left} bytes early")
        left -= len(block)
        if not discard:
            parts.append(block)
    return b"".join(parts)


@dataclass
class InMemoryArray:
    """An :class:`ArraySource` over an array already in memory (for tests and small sets)."""

    array: np.ndarray
    name: str = "array"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def describe(self) -> str:
        import hashlib

        return f"{self.name}:{hashlib.sha256(np.ascontiguousarray(self.array).tobytes()).hexdigest()}"


# --- shared helpers ----------------------------------------------------------------------


def label_file_paths(root: Path, labels: str, default: str) -> dict[str, Path]:
    """split -> label CSV: ``labels`` is empty (``<root>/<default>``), a folder holding the
    default names, or a pattern with ``{split}``; relative to ``root`` unless absolute."""
    if not labels:
        pattern = str(root / default)
    elif "{split}" in labels:
        pattern = str(_resolve(root, labels))
    else:
        folder = _resolve(root, labels)
        if not folder.is_dir():
            raise DataError(f"{folder}: data.options.labels must be a folder holding {default.format(split='*')} "
                            f"or a pattern with {{split}}")
        pattern = str(folder / default)
    return {split: Path(pattern.replace("{split}", split)) for split in SPLITS}


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _canonical_or_reordered(canonical: tuple[str, ...], options, source: str) -> list[str]:
    explicit = list(getattr(options, "classes", []) or [])
    if not explicit:
        return list(canonical)
    if sorted(explicit) != sorted(canonical):
        missing = [c for c in canonical if c not in explicit]
        extra = [c for c in explicit if c not in canonical]
        raise ConfigError(f"data.options.classes must list the {len(canonical)} {source} classes in any order "
                          f"(missing {missing[:3]}, unknown {extra[:3]}); leave it empty for the canonical order")
    return explicit


def _patient_column(df: pd.DataFrame, path: Path, configured: str, candidates: tuple[str, ...],
                    required: bool) -> str | None:
    if configured:
        _require_columns(df, path, [configured])
        return configured
    for c in candidates:
        if c in df.columns:
            return c
    if required:
        raise DataError(f"{path}: no patient column; expected one of {list(candidates)} "
                        f"(or set data.options.patient_column)")
    return None


def _require_values(df: pd.DataFrame, path: Path, columns: list[str], id_column: str) -> None:
    """Id-like columns must not be empty."""
    for c in columns:
        bad = df[c].isna() | (df[c].astype(str).str.strip() == "")
        if bad.any():
            rows = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())[:3]]  # +2: header, 1-based
            raise DataError(f"{path}: column {c!r} is empty in {int(bad.sum())} row(s), e.g. lines {rows}")


def _read_csv(path: Path, dtype) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: not a readable CSV ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas makes the surplus leading fields an index
        raise DataError(f"{path}: not a readable CSV (the first data row has more fields than the header's "
                        f"{len(df.columns)})")
    _refuse_duplicate_header(path)
    return df


def _refuse_duplicate_header(path: Path) -> None:
    """pandas renames a repeated column to ``name.1``, which would pass for another class."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # pandas read it; nothing more to check
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: duplicate column(s) {repeated[:5]} in the header; every column must appear once")


def _require_columns(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {columns[:3]}... "
                        f"(see the README for this source's layout)")


def binary_labels(df: pd.DataFrame, classes: list[str], path: Path, id_column: str = "id") -> pd.DataFrame:
    """The class columns as int8, refusing NaN and anything other than 0/1."""
    out = {}
    for c in classes:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = ~col.isin([0, 1])
        if bad.any():
            rows = df.loc[bad, id_column].astype(str).head(3).tolist() if id_column in df else []
            values = df.loc[bad, c].head(3).tolist()
            raise DataError(f"{path}: column {c!r} must hold only 0/1; {int(bad.sum())} row(s) do not, "
                            f"e.g. ids {rows} with values {values}")
        out[c] = col.to_numpy(dtype=np.int8)
    return pd.DataFrame(out, index=df.index)


def print_notes(data: SourceData) -> None:
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
