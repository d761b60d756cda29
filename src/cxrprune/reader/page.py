"""Render one reader form as a single self-contained HTML page (no server, no network).

The page (``page.html`` + ``page.css`` + ``page.js``, package data) embeds its cases as a JSON
block: per case only the neutral case id, the dataset labels the reader judges and the image
as a base64 PNG data URL. PIE status, image ids, scores and file names never enter the page:
:func:`case_payload` is the one place that decides what a case carries.

Images come from the dataset's original file (``<data.root>/images/<image_id>``, or
``<data.root>/<image_id>``) when it exists, downscaled to ``image_size`` on the longest side
and re-encoded (which drops every PNG text chunk), else from the training cache.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cxrprune.core.atomic import atomic_dir
from cxrprune.core.errors import DataError
from cxrprune.reader.sample import LABEL_SEPARATOR

APP = "cxr-label-review/1"
_PLACEHOLDER = re.compile(r"/\*__(CSS|JS)__\*/|__(TITLE|DATA)__")


def template(name: str) -> str:
    return resources.files("cxrprune.reader").joinpath(name).read_text(encoding="utf-8")


def to_gray8(img: Image.Image) -> np.ndarray:
    """8-bit gray pixels of any PIL image: 16-bit scaled to its maximum, colour to luminance."""
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return np.round(scaled).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def fit_size(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so that the longest side is at most ``max_side``."""
    h, w = arr.shape
    if max(h, w) <= max_side:
        return np.ascontiguousarray(arr)
    k = max_side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return np.asarray(Image.fromarray(arr, "L").resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


def original_path(data_root: str | os.PathLike | None, image_id: str) -> Path | None:
    if not data_root:
        return None
    root = Path(data_root)
    for path in (root / "images" / image_id, root / image_id):
        if path.is_file():
            return path
    return None


def load_original(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return to_gray8(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable image ({exc}); replace it or remove it from the dataset") from None


def png_data_url(arr: np.ndarray) -> str:
    """A fresh PNG (no metadata chunks) of a uint8 gray array, as a data URL."""
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def case_payload(case_id: str, labels: Sequence[str], image: np.ndarray) -> dict:
    """Everything a page knows about one case: its neutral id, its labels, its pixels."""
    return {"case_id": str(case_id), "labels": [str(x) for x in labels], "image": png_data_url(image)}


def script_json(obj: object) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_form(form: int, study: str, cases: Sequence[dict]) -> str:
    """The HTML of one form; ``cases`` are :func:`case_payload` dicts in reading order."""
    title = f"Chest X-ray label review \u00b7 form {form}"
    data = {"app": APP, "form": int(form), "study": str(study), "title": title, "cases": list(cases)}
    values = {"CSS": template("page.css"), "JS": template("page.js"),
              "TITLE": _html_escape(title), "DATA": script_json(data)}
    # one pass, so that nothing substituted (the data above all) is scanned for placeholders
    return _PLACEHOLDER.sub(lambda m: values[m.group(1) or m.group(2)], template("page.html"))


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def write_forms(manifest: pd.DataFrame, out_dir: str | os.PathLike,
                image_for: Callable[[str], tuple[np.ndarray, str]], max_side: int) -> dict:
    """Write ``form-<i>.html`` for every form of ``manifest`` (atomically, as one folder).

    ``image_for(image_id)`` returns ``(uint8 gray array, source name)``. Returns counts of
    image sources and the pages' sizes.
    """
    sources: dict[str, int] = {}
    sizes = {}
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # the forms are meant to be shared (mkdtemp makes the folder private)
        for form, rows in manifest.sort_values(["form", "position"]).groupby("form", sort=True):
            studies = rows["study"].unique()
            if len(studies) != 1:
                raise DataError(f"manifest: form {form} has several study ids {list(studies)}")
            cases = []
            for row in rows.itertuples(index=False):
                arr, source = image_for(str(row.image_id))
                sources[source] = sources.get(source, 0) + 1
                labels = [x for x in str(row.labels).split(LABEL_SEPARATOR) if x]
                cases.append(case_payload(row.case_id, labels, fit_size(arr, max_side)))
            html = render_form(int(form), str(studies[0]), cases)
            path = tmp / f"form-{int(form)}.html"
            path.write_text(html, encoding="utf-8")
            sizes[f"form-{int(form)}"] = path.stat().st_size
    return {"image_sources": sources, "page_bytes": sizes}


def image_source(data_root: str | os.PathLike | None, cache_ids: Sequence[str],
                 cache: np.ndarray) -> Callable[[str], tuple[np.ndarray, str]]:
    """``image_for`` for :func:`write_forms`: the original file when present, else the cache row."""
    row_of = {str(i): k for k, i in enumerate(cache_ids)}

    def image_for(image_id: str) -> tuple[np.ndarray, str]:
        path = original_path(data_root, image_id)
        if path is not None:
            return load_original(path), "original"
        if image_id not in row_of:
            raise DataError(f"image {image_id!r} is neither under {data_root}/images nor in the test cache")
        return np.asarray(cache[row_of[image_id]], dtype=np.uint8), "cache"

    return image_for
