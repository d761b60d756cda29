"""DVC stage ``reader-sample``: draw the blinded reader-study sample and write one page per form."""

from __future__ import annotations

from cxrprune.core.config import Params
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.reader.page import image_source, write_forms
from cxrprune.reader.sample import draw_sample, load_pies, write_sample
from cxrprune.core.stage import Stage


STAGE = Stage(name="reader-sample",
              help="draw the blinded reader-study sample, write one HTML form per reader")


def run(params: Params) -> None:
    cfg = params.reader
    name, layout = params.data.name, params.layout
    prepared = layout.prepared
    classes = load_meta(prepared)["classes"]
    labels, images = load_split(prepared, "test")
    pies = load_pies(layout.pies)
    sample = draw_sample(pies, labels, classes, cfg)
    pages = write_forms(sample.manifest, layout.reader_forms,
                        image_source(params.data.root, labels["image_id"].astype(str).tolist(), images),
                        cfg.image_size)
    sample.info.update(pages)
    write_sample(sample, layout.reader_manifest, layout.reader_key, layout.reader_sample_info)
    info = sample.info
    reuse = ""
    if info["max_uses_per_image"] > 1:
        reuse = (f"; the test set has {info['pies_available']} PIEs for {cfg.forms} x {cfg.per_group} slots, "
                 f"so images recur across forms (at most {info['max_uses_per_image']} times, never twice in a form)")
    print(f"reader study {name}: {cfg.forms} form(s) of {cfg.per_group} PIEs + {cfg.per_group} non-PIEs, "
          f"{info['distinct_pies']} distinct PIEs, {info['distinct_non_pies']} distinct non-PIEs{reuse} -> "
          f"{layout.reader_forms}")

