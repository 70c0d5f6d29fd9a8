"""The explorer page in headless Chromium: chain height, a settlement, its verified mark.

Needs `chromium` and `chromium-driver` (apt; `make test` installs them) and `selenium` (PyPI); fails without them.
The screenshot is kept as a test artifact under tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Iterator

import httpx
import pytest

from live_chain import EARNED_CENTS, LiveChain

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")
PAGE_TIMEOUT_S = 20
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,1800")


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver

    found = _chromium()
    if found is None:
        pytest.fail("chromium and chromium-driver are not installed: run `make browser` (apt)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="careledger-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=" + profile)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_explorer_shows_the_height_a_settlement_and_its_verified_mark(live_chain: LiveChain, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    height = httpx.get(live_chain.observer_url + "/verified", timeout=5).json()["verified_height"]
    browser.get(live_chain.observer_url + "/explorer")
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.save_screenshot(os.path.join(ARTIFACTS, "explorer.png"))

    assert int(browser.find_element(By.ID, "chain-height").text) >= height
    assert browser.find_element(By.ID, "chain-height-mark").find_element(By.CLASS_NAME, "mark").get_attribute(
        "data-verified") == "true"
    row = browser.find_element(By.XPATH, "//table[@id='settlements']//tr[td//span[text()='aco1/mssp/2022/final']]")
    assert "$%s.%02d" % (format(EARNED_CENTS // 100, ","), EARNED_CENTS % 100) in row.text  # $882.00
    assert row.find_element(By.CLASS_NAME, "mark").get_attribute("data-verified") == "true"
    assert "verified" in row.find_element(By.CLASS_NAME, "mark").text
    assert browser.find_elements(By.CSS_SELECTOR, "#tx-chart svg rect")  # the inline SVG chart drew
