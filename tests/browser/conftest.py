"""The dashboard's tests: a live server on 127.0.0.1 with the test driver, an image `tiny-linux`
and a flavor `small`; the browser fixtures (playwright, browser, page) are in tests/conftest.py,
shared with the e2e tier."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from src.app import App
from tests.conftest import make_qcow2
from tests.support import LiveServer, fetch

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # git-ignored


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
