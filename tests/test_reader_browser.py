"""A reader completes a generated 40-case form in real headless Chromium; the export feeds the analysis.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without one of
them the test is skipped, saying which is missing, and under ``make test`` it fails
(``browser_helpers``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from browser_helpers import require_browser, start_chromium
from reader_helpers import NAME, make_study, params_for

from cxrprune.core.layout import Layout
from cxrprune.reader.answers import ANSWER_COLUMNS, load_answers
from cxrprune.reader.sample import load_key, load_manifest
from cxrprune.stages import reader_analyze, reader_sample

pytestmark = [pytest.mark.slow, pytest.mark.browser]

webdriver = require_browser()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

N_CASES = 40


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_chromium(webdriver, tmp_path / "chromium-profile",
                            prefs={"download.default_directory": str(downloads),
                                   "download.prompt_for_download": False})
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    driver.console = []
    try:
        yield driver
    finally:
        driver.quit()


def expected(i: int) -> dict:
    """The answers the test gives to case ``i`` (0-based)."""
    return {"agree": "no" if i % 3 == 0 else "yes", "quality": i % 5 + 1, "difficulty": (2 * i + 1) % 5 + 1}


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def keys(driver, *values: str) -> None:
    chain = ActionChains(driver)
    for v in values:
        chain.send_keys(v)
    chain.perform()


def collect_console(driver) -> None:
    driver.console.extend(driver.get_log("browser"))


def answer_by_clicks(driver, i: int) -> None:
    e = expected(i)
    driver.find_element(By.ID, f"agree-{e['agree']}").click()
    driver.find_element(By.ID, f"quality-{e['quality']}").click()
    driver.find_element(By.ID, f"difficulty-{e['difficulty']}").click()
    if i < N_CASES - 1:
        driver.find_element(By.ID, "next").click()


def answer_by_keys(driver, i: int) -> None:
    e = expected(i)
    # quality first, then difficulty: the highlighted question moves on by itself
    keys(driver, "y" if e["agree"] == "yes" else "n", str(e["quality"]), str(e["difficulty"]))
    if i < N_CASES - 1:
        keys(driver, Keys.ENTER)


def wait_for_case(driver, i: int) -> None:
    WebDriverWait(driver, 5).until(lambda d: text(d, "progress") == f"case {i + 1} of {N_CASES}")


def pressed(driver, q: str) -> list[str]:
    return [b.get_attribute("data-v") for b in driver.find_elements(By.CSS_SELECTOR, f"#q-{q} button")
            if b.get_attribute("aria-pressed") == "true"]


def canvas_pixels(driver) -> str:
    return driver.execute_script("return document.getElementById('canvas').toDataURL();")


def wait_for_download(folder: Path, suffix: str, timeout: float = 120) -> Path:  # a hang detector
    end = time.time() + timeout
    while time.time() < end:
        done = [p for p in folder.iterdir() if p.suffix == suffix]
        if done and not any(p.name.endswith(".crdownload") for p in folder.iterdir()):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no {suffix} download in {folder}: {list(folder.iterdir())}")


def test_reader_completes_a_form_and_the_export_feeds_the_analysis(tmp_path, monkeypatch, browser):
    monkeypatch.chdir(tmp_path)
    make_study(tmp_path, n_test=100, n_pies=25, originals=10)
    params = params_for(tmp_path, per_group=20, forms=1, simulate=False, answers_dir="answers")
    reader_sample.run(params)
    study = Layout(NAME)
    manifest = load_manifest(study.reader_manifest)
    assert len(manifest) == N_CASES
    page = (study.reader_forms / "form-1.html").resolve()
    driver = browser

    driver.get(page.as_uri())
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "reader-id").is_displayed())
    assert not driver.find_element(By.ID, "rate").is_displayed()  # nothing to rate before the reader id
    driver.find_element(By.ID, "reader-id").send_keys("dr-a, chest")
    driver.find_element(By.ID, "start-button").click()
    wait_for_case(driver, 0)
    assert not driver.find_element(By.ID, "start").is_displayed()
    assert text(driver, "complete-count") == f"0 of {N_CASES} answered"
    assert text(driver, "case-id") == f"Case {manifest['case_id'][0]}"
    shown = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#labels li")]
    assert shown == manifest["labels"][0].split("|")

    # the viewer: wheel and keys zoom, the window/level keys change the pixels
    WebDriverWait(driver, 5).until(lambda d: d.execute_script(
        "return document.getElementById('canvas').width > 10"))
    before = canvas_pixels(driver)
    canvas = driver.find_element(By.ID, "canvas")
    ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -300).perform()
    WebDriverWait(driver, 5).until(lambda d: text(d, "zoom-value") != "100%")
    keys(driver, "r")
    assert text(driver, "zoom-value") == "100%"
    keys(driver, "[", "[", ",")
    assert int(driver.find_element(By.ID, "window").get_attribute("value")) < 255
    assert canvas_pixels(driver) != before
    driver.find_element(By.ID, "zoom-in").click()
    assert text(driver, "zoom-value") == "125%"
    keys(driver, "r")

    half = N_CASES // 2
    for i in range(half):
        wait_for_case(driver, i)
        (answer_by_clicks if i % 2 == 0 else answer_by_keys)(driver, i)
    wait_for_case(driver, half)
    assert text(driver, "complete-count") == f"{half} of {N_CASES} answered"
    collect_console(driver)

    # closing the tab or reloading loses nothing: same reader, same case, same answers
    driver.refresh()
    wait_for_case(driver, half)
    assert text(driver, "complete-count") == f"{half} of {N_CASES} answered"
    assert text(driver, "reader-label") == "reader: dr-a, chest"
    driver.find_elements(By.CSS_SELECTOR, "#strip button")[3].click()
    wait_for_case(driver, 3)
    e = expected(3)
    assert pressed(driver, "agree") == [e["agree"]]
    assert pressed(driver, "quality") == [str(e["quality"])]
    assert pressed(driver, "difficulty") == [str(e["difficulty"])]
    keys(driver, "u")  # next unanswered case
    wait_for_case(driver, half)

    for i in range(half, N_CASES):
        wait_for_case(driver, i)
        (answer_by_clicks if i % 2 == 0 else answer_by_keys)(driver, i)
    WebDriverWait(driver, 5).until(lambda d: text(d, "complete-count") == f"{N_CASES} of {N_CASES} answered")
    assert "All 40 cases are answered" in text(driver, "message")

    driver.find_element(By.ID, "export-csv").click()
    csv_path = wait_for_download(driver.downloads, ".csv")
    driver.find_element(By.ID, "export-json").click()
    json_path = wait_for_download(driver.downloads, ".json")
    assert "Saved answers-form-1-" in text(driver, "export-status")
    collect_console(driver)
    problems = [m for m in driver.console if m.get("level") in ("SEVERE", "WARNING")]
    assert problems == [], problems

    # the exports, unchanged, feed the analysis: both read, the repeats recorded, answers exact
    assert csv_path.read_text().splitlines()[0].split(",") == ANSWER_COLUMNS
    doc = json.loads(json_path.read_text())
    assert doc["format"] == "cxr-reader-answers/1" and doc["reader_id"] == "dr-a, chest"
    assert len(doc["answers"]) == N_CASES
    answers = Path("answers")
    answers.mkdir()
    shutil.copy(csv_path, answers / csv_path.name)
    shutil.copy(json_path, answers / json_path.name)
    key = load_key(study.reader_key)
    ratings, report = load_answers([(answers / csv_path.name, "real"), (answers / json_path.name, "real")],
                                   key, manifest)
    assert len(ratings) == N_CASES
    assert report["identical_duplicates_dropped"] == N_CASES
    by_case = ratings.set_index("case_id")
    for i, cid in enumerate(manifest["case_id"]):
        e = expected(i)
        row = by_case.loc[cid]
        assert row["agree"] == (1.0 if e["agree"] == "yes" else 0.0), i
        assert row["quality"] == e["quality"] and row["difficulty"] == e["difficulty"], i
        assert row["reader_id"] == "dr-a, chest"
    assert (ratings["seconds"] >= 0).all() and ratings["seconds"].sum() > 0

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")  # a real store in the test folder
    reader_analyze.run(params)
    result = json.loads(Path(f"metrics/{NAME}/reader.json").read_text())
    assert result["n_readers_real"] == 1 and result["n_ratings"] == N_CASES
    assert result["pooled"]["agree"]["n_pie"] == 20 and result["pooled"]["agree"]["n_non_pie"] == 20
    table = pd.read_csv(f"plots/{NAME}/reader_ratings.csv")
    assert set(table["reader"]) == {"pooled", "dr-a, chest"}
