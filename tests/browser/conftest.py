"""Headless Chromium for the browser tests: Debian's ``chromium`` and ``chromium-driver``.

The packages are installed by the test setup when missing (``apt-get update`` then ``apt-get install``),
so a fresh machine runs these tests instead of skipping them; a failed install fails the run with the
installer's output, which names the cause (no network, not root, …).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)


def _apt(*args: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(
        ["apt-get", *args],  # from PATH, as an operator would run it
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"apt-get {' '.join(args)} failed ({result.returncode}); the browser tests need Debian's "
            f"chromium and chromium-driver:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    """Make sure ``chromium`` and ``chromedriver`` exist, installing the Debian packages if not."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail("chromium/chromedriver are missing and apt-get is not available to install them")
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", "chromium", "chromium-driver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} or {CHROMEDRIVER} is still missing")


@pytest.fixture
def browser(chromium_installed: None) -> Iterator[object]:
    """A headless Chromium WebDriver with a fresh profile, quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="te-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
