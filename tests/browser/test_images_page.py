"""The Images page in a real browser: a file uploaded from the page and an image imported by
URL (from a server of the test's own on 127.0.0.1) both end active; a failed import says why."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from src.config import Config
from tests.browser.test_dashboard import sign_in
from tests.conftest import AppFactory, make_qcow2
from tests.origin import Origin, reaching_origin
from tests.support import LiveServer, fetch


@pytest.fixture
def importing_site(make_app: AppFactory, config: Config) -> Iterator[LiveServer]:
    server = LiveServer(make_app(reaching_origin(config)))
    yield server
    server.stop()


def image_row(page: Page, name: str) -> Locator:
    return page.get_by_role("table", name="Images").get_by_role("row").filter(
        has=page.get_by_role("rowheader", name=name, exact=True))


def test_upload_and_import_from_the_images_page(page: Page, importing_site: LiveServer,
                                                origin: Origin, tmp_path: Path) -> None:
    site = importing_site
    local = tmp_path / "mine.qcow2"
    make_qcow2(local)
    sign_in(page, site, site.token)
    page.get_by_role("navigation").get_by_role("link", name="Images", exact=True).click()
    page.get_by_label("Name").first.fill("uploaded")
    page.get_by_label("File").set_input_files(str(local))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status")).to_have_text("Image uploaded uploaded.")
    expect(image_row(page, "uploaded")).to_contain_text("active")
    form = page.get_by_role("form", name="Import an image by URL")
    form.get_by_label("Name").fill("far")
    form.get_by_label("URL").fill(f"{origin.url}/image.qcow2")
    form.get_by_role("button", name="Import").click()
    expect(page.get_by_role("status")).to_have_text("Import of far: succeeded")
    expect(image_row(page, "far")).to_contain_text("active")
    form.get_by_label("Name").fill("gone")
    form.get_by_label("URL").fill(f"{origin.url}/missing")
    form.get_by_role("button", name="Import").click()
    expect(page.get_by_role("alert")).to_contain_text("Import failed: download_failed")
    shown = {image["name"]: image["status"] for image in fetch(site.url, "GET", "/v1/images")
             .body["images"]}
    assert shown == {"uploaded": "active", "far": "active", "gone": "error"}
    assert page.problems == []  # type: ignore[attr-defined]  # no script error, no CSP refusal
