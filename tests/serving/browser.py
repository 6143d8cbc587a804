"""Headless Chromium through WebDriver (selenium) for the chat page's tests.

Debian's `chromium` and `chromium-driver` packages provide the browser and the driver; the
tests skip, saying why, where either (or selenium) is missing, unless
ENGINE_REQUIRE_BROWSER=1 (what .ci/run sets), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.serving.servers import API_KEY, Server

REQUIRE_ENV = "ENGINE_REQUIRE_BROWSER"
SCREENSHOT_ENV = "ENGINE_SCREENSHOT_DIR"  # where the screenshots go (default: a temp folder)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
DESKTOP = (1280, 860)
PHONE = (360, 760)
WAIT_S = 90.0  # a liveness guard: every wait normally ends in well under a second or two


def _find(names: tuple[str, ...]) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def browser_or_skip() -> tuple[str, str]:
    """(browser, driver) paths, or skip (fail under ENGINE_REQUIRE_BROWSER=1) with the reason."""
    reason = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        reason = "selenium is not installed (pip install -e '.[dev]')"
    browser, driver = _find(BROWSERS), _find(DRIVERS)
    if reason is None and (browser is None or driver is None):
        reason = ("Chromium or its WebDriver is missing: apt-get install -y chromium "
                  "chromium-driver")
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    return browser, driver  # type: ignore[return-value]


def start_chrome(downloads: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver = browser_or_skip()
    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--disable-background-networking",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium never looks for (or downloads) one itself.
    return webdriver.Chrome(options=options, service=Service(driver))


def wait(driver: Any, condition: Callable[[Any], Any], what: str,
         timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A streaming answer's view is replaced at every repaint: a stale element is retried.
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message=f"waited {timeout:g} s for {what}")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_page(driver: Any, server: Server, key: str | None = API_KEY,
              fresh: bool = True) -> None:
    """Load the page; `fresh` forgets this origin's conversations and key first; `key` is
    typed into the API-key prompt when the page asks for one."""
    if fresh:
        driver.get(f"{server.base}/version")  # same origin, so its storage can be cleared
        driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    driver.get(f"{server.base}/")
    if key is None:
        return
    wait(driver, lambda d: by_id(d, "key-dialog").get_attribute("open") is not None
         or is_ready(d), "the key prompt")
    if by_id(driver, "key-dialog").get_attribute("open") is not None:
        enter_key(driver, key)
    wait(driver, is_ready, "the page to load its models")


def is_ready(driver: Any) -> bool:
    """The page is wired and has its models (app.js marks <body data-ready>)."""
    return driver.find_element("tag name", "body").get_attribute("data-ready") == "true"


def reload(driver: Any) -> None:
    driver.refresh()
    wait(driver, is_ready, "the page to load again")


def enter_key(driver: Any, key: str) -> None:
    field = by_id(driver, "key-input")
    field.clear()
    field.send_keys(key)
    by_id(driver, "key-save").click()


def set_settings(driver: Any, **values: Any) -> None:
    """Type conversation settings (temperature=0, max_tokens=32, system="...") into the
    settings panel, opening it when closed."""
    if not by_id(driver, "settings").is_displayed():
        by_id(driver, "toggle-settings").click()
    for name, value in values.items():
        field = by_id(driver, name)
        if field.get_attribute("type") == "checkbox":
            if field.is_selected() != bool(value):
                field.click()
            continue
        field.clear()
        field.send_keys(str(value))


def send(driver: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = by_id(driver, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def assistant_views(driver: Any) -> list[Any]:
    return css(driver, "#messages article.assistant")


def streamed_text(driver: Any) -> str:
    """The last answer's text so far (read in one script: its view is replaced as it grows)."""
    return driver.execute_script(
        "const v = document.querySelectorAll('#messages article.assistant .body');"
        "return v.length ? v[v.length - 1].textContent : '';")


def wait_idle(driver: Any) -> Any:
    """Wait for the answer under way to end; the last assistant message's view."""
    wait(driver, lambda d: "running" not in (d.find_element("tag name", "body")
                                             .get_attribute("class") or ""), "the answer")
    return assistant_views(driver)[-1]


def running_requests(server: Server, model: str) -> float:
    """engine_num_requests_running for `model`, from /metrics."""
    with urllib.request.urlopen(f"{server.base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf'^engine_num_requests_running{{model="{re.escape(model)}"}} (\S+)$', text,
                  re.MULTILINE)
    assert m is not None, "no running gauge for the model in /metrics"
    return float(m.group(1))


def answered(server: Server, endpoint: str = "/v1/chat/completions",
             status: str = r"\d+") -> float:
    """How many requests to `endpoint` the server has answered with `status` (a pattern),
    from /metrics."""
    with urllib.request.urlopen(f"{server.base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(rf'^engine_http_requests_total\{{endpoint="{re.escape(endpoint)}",'
                       rf'status="{status}"\}} (\S+)$', text, re.MULTILINE)
    return sum(float(v) for v in found)


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(SCREENSHOT_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")
