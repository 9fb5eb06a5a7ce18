"""A real browser for the dashboard: Debian's chromium driven by Playwright, never downloaded.

Each test gets a fresh profile (--user-data-dir), a live server on 127.0.0.1 with the test
driver, an image `tiny-linux` and a flavor `small`.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from src.app import App
from tests.conftest import make_qcow2
from tests.support import LiveServer, fetch

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # git-ignored


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup-dev` (Debian's chromium package)",
                    pytrace=False)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS,
        viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(15000)
    yield context
    context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Page:
    """A tab that fails the test on any script error or refused resource (CSP included)."""
    tab = browser.pages[0] if browser.pages else browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", lambda message: problems.append(f"console: {message.text}")
           if message.type == "error" and "401" not in message.text
           and "404" not in message.text and "409" not in message.text else None)
    tab.problems = problems  # type: ignore[attr-defined]
    return tab


@pytest.fixture
def site(app: App) -> Iterator[LiveServer]:
    make_qcow2(app.config.images_dir / "tiny-linux.qcow2")
    server = LiveServer(app)
    for path, body in (("/v1/images", {"name": "tiny-linux", "file": "tiny-linux.qcow2",
                                        "format": "qcow2"}),
                       ("/v1/flavors", {"name": "small", "cpu": 1, "ram": 128, "disk_gb": 1})):
        assert fetch(server.url, "POST", path, body).status == 201
    yield server
    server.stop()


def shot(page: Page, name: str) -> Path:
    """A screenshot of the whole page under tests/artifacts/ (kept out of git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
