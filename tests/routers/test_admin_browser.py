"""The operators' console in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium with both paths given: nothing is downloaded).

`serve` runs in a process of its own on the test's tracking store; the test files the
requests in process. Screenshots of each page go to ``CONSOLE_SCREENSHOTS`` (`make
screenshots` sets docs/console) or to the test's temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from app import db
from app.state import AppState
from app.subjects import Review, ReviewCandidate
from tests.app_fixtures import HASH_KEY, JWT_SECRET, PUBLIC_BASE_URL, RECEIPT_KEY, bearer, mint
from tests.engine_support import Script, new_script, run_until_settled
from tests.routers.test_admin_console import file_in_review
from testsupport.cli import command, environment
from testsupport.seed import add_tenant

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
PHONE = (390, 844)
DESKTOP = (1280, 900)
SHOTS = ("login", "list", "review-request", "completed-request", "phone")


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """One headless Chromium for the module."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    # Both paths given: Selenium Manager has nothing to look up or download.
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def tracking_url(tmp_path: Path) -> str:
    """One backend is enough here (the HTTP tests run on both): a SQLite file that the
    served process and the test share."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'tracking.db'}"
    db.upgrade_sync(url)
    return url


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, default=["ok"])


@pytest.fixture
def settings_overrides(script: Script, soundops_db: str) -> dict[str, Any]:
    return {"testing_purgers": script.path, "target_postgres_url": soundops_db}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def served(state: AppState, script: Script, tmp_path: Path) -> Iterator[str]:
    """`serve` (with the test doubles) on the test's stores; its base URL on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELETION_")}
    env.update(
        DELETION_ENVIRONMENT="test",
        DELETION_DATABASE_URL=state.settings.database_url,
        DELETION_JWT_SECRET=JWT_SECRET,
        DELETION_HASH_KEY=HASH_KEY,
        DELETION_RECEIPT_SIGNING_KEY=RECEIPT_KEY,
        DELETION_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        DELETION_TESTING_PURGERS=str(script.path),
        DELETION_TARGET_POSTGRES_URL=str(state.settings.target_postgres_url),
        DELETION_RUN_WORKER="false",
    )
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        command("serve", "--port", str(port)), env=environment(env), stdout=log, stderr=log
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def gone(element: WebElement) -> bool:
    """Whether ``element`` left the document: ``expected_conditions.staleness_of``, except
    that ChromeDriver answers for a node of the page being replaced with "Node with given
    id does not belong to the document" (an unknown error) as well as a stale reference."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc.msg):
            return True
        raise
    return False


def navigate(driver: WebDriver, action: WebElement, *keys: str) -> None:
    """Click (or type ``keys`` into) ``action`` and wait for the next page to load."""
    page = driver.find_element(By.TAG_NAME, "html")
    if keys:
        action.send_keys(*keys)
    else:
        action.click()
    WebDriverWait(driver, 30).until(lambda _: gone(page))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def sign_in(driver: WebDriver, base: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/admin/requests")
    assert driver.current_url == f"{base}/admin/login"
    driver.find_element(By.ID, "token").send_keys(mint(("deletions:admin",), subject="ops-anna"))
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]"))
    assert driver.current_url == f"{base}/admin/requests"


def screenshot(driver: WebDriver, directory: Path, name: str) -> None:
    """The whole page: the window as tall as the document, then back."""
    width, height = driver.get_window_size().values()
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, int(full) + 140))
    driver.save_screenshot(str(directory / f"{name}.png"))
    driver.set_window_size(width, height)


def no_horizontal_scroll(driver: WebDriver) -> bool:
    return bool(
        driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
            " && document.body.scrollWidth <= window.innerWidth"
        )
    )


async def test_an_operator_signs_in_filters_and_approves_choosing_a_candidate(
    driver: WebDriver,
    served: str,
    state: AppState,
    client: httpx.AsyncClient,
    soundops_db: str,
    shots: Path,
) -> None:
    one = await add_tenant(soundops_db, "browser-band-one", "owner@browser-bands.example")
    two = await add_tenant(soundops_db, "browser-band-two", "owner@browser-bands.example")
    review = Review(
        named={"owner_email": "owner@browser-bands.example"},
        candidates=[
            ReviewCandidate(tenant_id=one, site_name="browser-band-one"),
            ReviewCandidate(tenant_id=two, site_name="browser-band-two"),
        ],
    )
    in_review = await file_in_review(
        state,
        "<browser@x>",
        reason="several_tenants",
        review=review,
        owner="owner@browser-bands.example",
    )
    created = await client.post(
        "/v1/deletion-requests",
        json={"kind": "account", "subject": {"site_name": "browser-done-band"}},
        headers=bearer(mint()),
    )
    done = created.json()["id"]
    assert await run_until_settled(state, [done]) == {done: "completed"}

    driver.set_window_size(*DESKTOP)
    driver.delete_all_cookies()
    driver.get(f"{served}/admin/requests")
    assert driver.current_url == f"{served}/admin/login"
    screenshot(driver, shots, "login")
    sign_in(driver, served)
    assert done in driver.page_source and str(in_review.request.id) in driver.page_source
    screenshot(driver, shots, "list")

    Select(driver.find_element(By.ID, "status")).select_by_value("needs_review")
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert "status=needs_review" in driver.current_url
    assert done not in driver.page_source
    navigate(driver, driver.find_element(By.LINK_TEXT, str(in_review.request.id)))
    assert driver.find_element(By.TAG_NAME, "h1").text.endswith(str(in_review.request.id))
    assert "browser-band-two" in driver.page_source
    screenshot(driver, shots, "review-request")

    driver.find_element(By.CSS_SELECTOR, "label[for=choice-1]").click()
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form[action$='/approve'] button"))
    assert driver.current_url == f"{served}/admin/requests/{in_review.request.id}"
    status = driver.find_element(By.CSS_SELECTOR, ".facts .status").text
    assert status == "pending"
    timeline = driver.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "created" in timeline and "approved" in timeline and "by ops-anna" in timeline
    approved = await state.requests.get(in_review.request.id)
    assert approved.pinned == {"tenant_ids": [str(two)], "account_ids": []}

    driver.get(f"{served}/admin/requests/{done}")
    progress = driver.find_element(By.ID, "progress").find_element(By.XPATH, "..").text
    assert "succeeded" in progress and "postgres_items: 1" in progress
    screenshot(driver, shots, "completed-request")

    driver.set_window_size(*PHONE)
    for page in ("/admin/requests", f"/admin/requests/{in_review.request.id}"):
        driver.get(f"{served}{page}")
        assert no_horizontal_scroll(driver), page
    driver.get(f"{served}/admin/requests/{done}")
    assert no_horizontal_scroll(driver)
    screenshot(driver, shots, "phone")
    driver.set_window_size(*DESKTOP)

    for name in SHOTS:
        path = shots / f"{name}.png"
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name


async def test_the_forms_are_reached_and_used_with_the_keyboard_alone(
    driver: WebDriver, served: str, state: AppState
) -> None:
    pending = await file_in_review(state, "<keys@x>", reason="dmarc_fail")
    sign_in(driver, served)
    driver.get(f"{served}/admin/requests/{pending.request.id}")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    first = driver.switch_to.active_element
    assert first.text == "Skip to content"
    reached: list[str] = []
    for _ in range(40):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        element = driver.switch_to.active_element
        reached.append(element.get_attribute("id") or element.text or element.tag_name)
    for control in ("choice-named", "identity", "value", "reject-reason", "cancel-reason"):
        assert control in reached, reached
    assert {"Approve", "Reject", "Cancel request"} <= set(reached), reached
    focused = driver.execute_script(
        "const e = document.activeElement; return getComputedStyle(e).outlineStyle"
    )
    assert focused != "none"  # a visible focus style

    # Reject with the keyboard only: focus the reason, type, Enter submits.
    for _ in range(40):
        if driver.switch_to.active_element.get_attribute("id") == "reject-reason":
            break
        driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
    navigate(driver, driver.switch_to.active_element, "spam", Keys.ENTER)
    assert driver.current_url == f"{served}/admin/requests/{pending.request.id}"
    rejected = await state.requests.get(pending.request.id)
    assert (rejected.status, rejected.status_reason) == ("cancelled", "spam")
