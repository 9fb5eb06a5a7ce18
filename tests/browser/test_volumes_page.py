"""The Volumes page in a real browser: a volume made from the form, listed with its status, an
attach the test driver cannot do shown as the task's error, and a delete."""
from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

from tests.browser.test_dashboard import sign_in
from tests.support import LiveServer, fetch


def volume_row(page: Page, name: str) -> Locator:
    return page.get_by_role("table", name="Volumes").get_by_role("row").filter(
        has=page.get_by_role("rowheader", name=name, exact=True))


def test_create_attach_and_delete_from_the_volumes_page(page: Page, site: LiveServer) -> None:
    vm = fetch(site.url, "POST", "/v1/vms", {"name": "box", "cpu": 1, "ram": 128,
                                             "image_name": "tiny-linux"})
    assert vm.status == 202
    sign_in(page, site, site.token)
    page.get_by_role("navigation").get_by_role("link", name="Volumes", exact=True).click()
    expect(page.get_by_role("heading", name="Volumes", level=1)).to_be_visible()
    form = page.get_by_role("form", name="Create a volume")
    form.get_by_label("Name").fill("ckpt")
    form.get_by_label("Size (GiB)").fill("3")
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_have_text("Create ckpt: done.")
    expect(volume_row(page, "ckpt")).to_contain_text("available")
    expect(volume_row(page, "ckpt")).to_contain_text("3 GiB")
    page.get_by_role("button", name="attach volume ckpt").click()
    # libvirt's test driver plugs no disks: the failed task says so, and nothing is attached.
    expect(page.get_by_role("alert")).to_contain_text("Attach ckpt to box failed: attach_failed")
    expect(volume_row(page, "ckpt")).to_contain_text("available")
    page.get_by_role("button", name="delete volume ckpt").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Delete ckpt: done.")
    expect(page.get_by_role("table", name="Volumes")).to_have_count(0)
    assert fetch(site.url, "GET", "/v1/volumes").body["volumes"] == []
    assert page.problems == []  # type: ignore[attr-defined]
