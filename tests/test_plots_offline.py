"""`make plots` (``dvc plots show`` with the repository's .dvc/config) renders without network.

DVC's own page loads Vega from a CDN, so on an offline machine every interactive plot is
blank. The repository points ``plots.html_template`` at plots/templates/offline.html, which
carries the scripts inline. This test runs the real ``dvc plots show`` on a copy of the
repository's plot definitions, templates and committed plot data, opens the page in headless
Chromium with every network request refused, and checks each Vega plot drew, with the 20 class
colours of the forgettability curves. A page with DVC's CDN scripts, in the same browser, is
the control: it must stay blank, or the network was not off.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from browser_helpers import require_browser, start_chromium

pytestmark = [pytest.mark.slow, pytest.mark.browser]

webdriver = require_browser()

from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from cxrprune.analysis.figures import CLASS_PALETTE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Every http(s) request goes to a closed local port and no name resolves; file:// still loads.
OFFLINE = ("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND")

# For each plot div, whether vega-embed drew its marks (canvas or SVG) into it.
DRAWN_JS = """
return arguments[0].map(id => !!document.getElementById(id).querySelector('canvas.marks, svg.marks'));
"""
# Which of the given #rrggbb colours appear as exact pixels on the plot's canvas.
COLOURS_JS = """
const [id, wanted] = arguments;
const canvas = document.getElementById(id).querySelector('canvas.marks');
const ctx = canvas.getContext('2d');
const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
const seen = new Set();
for (let i = 0; i < px.length; i += 4) {
  if (px[i + 3] !== 255) continue;
  seen.add('#' + [px[i], px[i + 1], px[i + 2]].map(v => v.toString(16).padStart(2, '0')).join(''));
}
return wanted.filter(c => seen.has(c));
"""


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory):
    """A DVC repository with this repository's plot definitions, templates, config and committed plots."""
    work = tmp_path_factory.mktemp("plots-repo")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    (work / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", work / ".dvc" / "config")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(ROOT / "plots" / "templates", work / "plots" / "templates")
    name = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["name"]
    shutil.copytree(ROOT / "plots" / name, work / "plots" / name)
    return work


def dvc_plots_show(repo: Path, out: Path, *args: str) -> Path:
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out), *args], cwd=repo, check=True,
                   capture_output=True, text=True)
    return out / "index.html"


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory):
    driver = start_chromium(webdriver, tmp_path_factory.mktemp("chromium-profile"), extra_args=OFFLINE)
    try:
        yield driver
    finally:
        driver.quit()


def vega_divs(page: Path, repo: Path) -> list[str]:
    """The ids of the page's Vega plots (a div with a vegaEmbed script), one per dvc.yaml data plot."""
    ids = re.findall(r'<div id = "([^"]+)">\s*<script[^>]*>[^<]*vegaEmbed', page.read_text())
    assert len(ids) == sum(1 for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"] if isinstance(p, dict))
    return ids


def spread_curves(repo: Path) -> None:
    """The committed forgettability curves with each class at its own constant height and no
    interval band (its class names, their order and the levels kept). Whether every committed curve shows a pixel of exactly its
    colour depends on the run: where lines cross and anti-aliasing blends them, a class can
    be left without one (the networks of 2026-12-04 hid two of twenty). Drawn apart, a
    missing colour can only mean the page did not give that class its colour."""
    import pandas as pd

    name = yaml.safe_load((repo / "params.yaml").read_text())["data"]["name"]
    path = repo / "plots" / name / "forgettability_curves.csv"
    curves = pd.read_csv(path)
    height = {c: -i / 20 for i, c in enumerate(sorted(curves["class_name"].unique()))}
    curves["rel_dap"] = curves["class_name"].map(height)
    curves["rel_dap_lo"] = curves["rel_dap_hi"] = curves["rel_dap"]  # no band over the other lines
    curves.to_csv(path, index=False)


def test_plots_page_renders_offline_with_twenty_class_colours(plots_repo, offline_browser, tmp_path):
    spread_curves(plots_repo)
    page = dvc_plots_show(plots_repo, tmp_path / "offline")
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "<script src=" not in html  # nothing to fetch
    driver = offline_browser
    ids = vega_divs(page, plots_repo)
    driver.get(page.as_uri())
    WebDriverWait(driver, 30).until(lambda d: all(d.execute_script(DRAWN_JS, ids)))
    problems = [m for m in driver.get_log("browser") if m.get("level") == "SEVERE"]
    assert problems == [], problems

    # every class its own colour: all 20 palette colours drawn in the forgettability curves
    curves = next(i for i in ids if i.startswith("Forgettability"))
    drawn = driver.execute_script(COLOURS_JS, curves, list(CLASS_PALETTE))
    assert drawn == list(CLASS_PALETTE), sorted(set(CLASS_PALETTE) - set(drawn))


def test_cdn_page_stays_blank_in_the_same_browser(plots_repo, offline_browser, tmp_path):
    """The control: DVC's CDN scripts cannot load here, so the browser really is offline."""
    template = tmp_path / "cdn.html"
    template.write_text("<!DOCTYPE html><html><head>{scripts}</head><body>{plot_divs}</body></html>")
    page = dvc_plots_show(plots_repo, tmp_path / "cdn", "--html-template", str(template))
    assert "cdn.jsdelivr" in page.read_text()
    driver = offline_browser
    ids = vega_divs(page, plots_repo)
    driver.get(page.as_uri())
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert not any(driver.execute_script(DRAWN_JS, ids))
    assert driver.execute_script("return typeof window.vegaEmbed") == "undefined"



def test_median_curves_carry_their_bootstrap_band(plots_repo):
    """mAP vs sparsity and the forgettability curves: the templates' band layer, filled in by
    the real ``dvc plots show``, spans each point's 95% interval columns (``<y>_lo``, ``<y>_hi``)."""
    import json

    out = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=plots_repo, check=True,
                         capture_output=True, text=True).stdout
    data = json.loads(out)["data"]
    for title, y in (("mAP vs sparsity", "map"), ("Forgettability curves", "rel_dap")):
        spec = next(v[0]["content"] for k, v in data.items() if k.startswith(title))
        band, line = spec["layer"]
        assert band["mark"]["type"] == "area" and line["mark"]["type"] == "line"
        assert (band["encoding"]["y"]["field"], band["encoding"]["y2"]["field"]) == (f"{y}_lo", f"{y}_hi")
        assert line["encoding"]["y"]["field"] == y
        rows = spec["data"]["values"]
        # lo <= hi; a percentile interval need not contain the point (near-chance AP is biased
        # upward under resampling), so the median itself is not checked against it.
        assert rows and all(float(r[f"{y}_lo"]) <= float(r[f"{y}_hi"]) for r in rows)
