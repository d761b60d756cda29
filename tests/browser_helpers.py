"""Headless Debian Chromium for the browser tests, and what a missing one means.

A browser test that skips looks like a pass, so under ``make test`` (which sets
``CXRPRUNE_REQUIRE_BROWSER=1`` after installing Chromium where it can) a missing Chromium,
chromedriver or selenium fails the run; elsewhere (a bare ``pytest``) the tests skip, saying
what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

# No first-run, sync, component or background traffic: a test's network use is its own.
ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--disable-default-apps", "--disable-extensions", "--window-size=1280,900")


def require_browser():
    """``selenium.webdriver``, or a module-level skip (a failure under ``make test``) naming what is missing."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if path is None]
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        message = (f"the browser tests need {', '.join(missing)}; "
                   f"Chromium: apt-get install -y chromium chromium-driver")
        if os.environ.get("CXRPRUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (or deselect them: make test BROWSER_TESTS=0)", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return webdriver


def start_chromium(webdriver, profile: Path, extra_args=(), prefs: dict | None = None):
    """A headless Chromium with its own profile, logging the page's console."""
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (*ARGS, f"--user-data-dir={profile}", *extra_args):
        opts.add_argument(arg)
    if prefs:
        opts.add_experimental_option("prefs", prefs)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
