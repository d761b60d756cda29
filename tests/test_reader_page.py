"""The rating page: self-contained, the paper's questions, and nothing that reveals PIE status."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin
from reader_helpers import NAME, make_study, params_for

from cxrprune.core.errors import DataError
from cxrprune.core.layout import Layout
from cxrprune.reader.page import (
    case_payload,
    fit_size,
    image_source,
    render_form,
    script_json,
    to_gray8,
    write_forms,
)
from cxrprune.reader.sample import load_key, load_manifest
from cxrprune.stages import reader_sample

# words that would tell a reader which group a case is in (or what the study is about)
REVEALING = re.compile(r"(?i)\bpies?\b|is_pie|non[-_ ]?pie|spearman|prun|stratum|exemplar|forgett|flipped")
DATA_URL = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="form-data">(.*?)</script>', html, re.S)
    assert m, "the page has no embedded form data"
    return json.loads(m.group(1))


def decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    img.load()
    return img


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_study(tmp_path, n_test=80, n_pies=16, originals=30)
    params = params_for(tmp_path, per_group=5, forms=3)
    reader_sample.run(params)
    return params


def test_one_self_contained_page_per_form_with_the_papers_questions(study):
    forms = sorted(p.name for p in (Layout(NAME).reader / "forms").iterdir())
    assert forms == ["form-1.html", "form-2.html", "form-3.html"]
    html = (Layout(NAME).reader / "forms" / "form-2.html").read_text()
    for wording in ("Do you fully agree with the label?", "Image quality", "1 poor", "5 excellent",
                    "Diagnosis difficulty", "1 very easy", "5 very difficult", "Export CSV", "Export JSON"):
        assert wording in html
    # no network: no external script, style, image or font
    assert not re.search(r"""(?i)<(script|img|link)[^>]+(src|href)=["'](?!data:)""", html)
    assert "http://" not in html and "https://" not in html
    data = page_data(html)
    assert data["form"] == 2 and len(data["cases"]) == 10


def test_the_page_does_not_reveal_pie_status(study):
    key = load_key(Layout(NAME).reader_key)
    manifest = load_manifest(Layout(NAME).reader_manifest)
    for form, rows in manifest.groupby("form"):
        html = (Layout(NAME).reader / "forms" / f"form-{form}.html").read_text()
        data = page_data(html)
        # a case carries its neutral id, its labels and its pixels: nothing else
        assert all(set(c) == {"case_id", "labels", "image"} for c in data["cases"])
        assert set(data) == {"app", "form", "study", "title", "cases"}
        assert [c["case_id"] for c in data["cases"]] == list(rows["case_id"])
        assert [c["labels"] for c in data["cases"]] == [s.split("|") for s in rows["labels"]]
        text = DATA_URL.sub("", html)
        assert not REVEALING.search(text), REVEALING.search(text).group(0)
        for image_id in rows["image_id"]:
            assert image_id not in html and image_id.split(".")[0] not in text
    # and a PIE's case looks like any other case: same keys, same kind of id
    pies = set(key.loc[key["is_pie"], "case_id"])
    assert pies and all(len(c) == 6 for c in key["case_id"])


def test_images_prefer_the_original_file_and_fall_back_to_the_cache(study):
    info = json.loads((Layout(NAME).reader / "sample.json").read_text())
    assert info["image_sources"]["original"] > 0 and info["image_sources"]["cache"] > 0
    manifest = load_manifest(Layout(NAME).reader_manifest)
    html = (Layout(NAME).reader / "forms" / "form-1.html").read_text()
    originals = {p.name for p in (Path(study.data.root) / "images").iterdir()}
    for case, image_id in zip(page_data(html)["cases"], manifest.loc[manifest["form"] == 1, "image_id"]):
        img = decode(case["image"])
        assert img.mode == "L"
        assert img.size == ((96, 96) if image_id in originals else (48, 48))


def test_pages_are_reproducible(study):
    first = {p.name: p.read_bytes() for p in (Layout(NAME).reader / "forms").iterdir()}
    reader_sample.run(study)
    again = {p.name: p.read_bytes() for p in (Layout(NAME).reader / "forms").iterdir()}
    assert first == again


def test_embedded_pngs_are_re_encoded_without_metadata(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "PIE from the pruned model")
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((40, 30), 200, np.uint8), "L").save(tmp_path / "images" / "a.png", pnginfo=info)
    image_for = image_source(tmp_path, ["a.png"], np.zeros((1, 8, 8), np.uint8))
    arr, source = image_for("a.png")
    assert source == "original" and arr.shape == (40, 30)
    img = decode(case_payload("X", ["Mass"], arr)["image"])
    assert "Comment" not in img.info and b"pruned" not in base64.b64decode(
        case_payload("X", ["Mass"], arr)["image"].split(",", 1)[1])
    with pytest.raises(DataError, match="neither"):
        image_for("missing.png")


def test_sixteen_bit_and_colour_images_become_8_bit_gray():
    arr16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    gray = to_gray8(Image.fromarray(arr16))
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    rgb = Image.fromarray(np.full((4, 5, 3), 100, np.uint8), "RGB")
    assert to_gray8(rgb).shape == (4, 5)


def test_fit_size_downscales_the_longest_side_only():
    assert fit_size(np.zeros((1024, 800), np.uint8), 512).shape == (512, 400)
    assert fit_size(np.zeros((100, 60), np.uint8), 512).shape == (100, 60)


def test_label_text_cannot_break_out_of_the_data_block():
    evil = "</script><script>alert(1)</script><!--"
    html = render_form(1, "abc", [case_payload("AAAAAA", [evil], np.zeros((4, 4), np.uint8))])
    assert "<script>alert(1)" not in html and "<!--" not in html
    assert page_data(html)["cases"][0]["labels"] == [evil]
    assert "\\u003c/script\\u003e" in script_json({"x": "</script>"})


def test_write_forms_refuses_a_form_with_two_study_ids(tmp_path):
    manifest = pd.DataFrame({"form": [1, 1], "position": [1, 2], "case_id": ["A", "B"], "image_id": ["a", "b"],
                             "labels": ["Mass", "Mass"], "study": ["s1", "s2"]})
    with pytest.raises(DataError, match="study"):
        write_forms(manifest, tmp_path / "forms", lambda i: (np.zeros((4, 4), np.uint8), "cache"), 64)
