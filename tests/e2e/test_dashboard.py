"""The dashboard in a real browser against qemu:///system: a real guest created, seen running
and deleted by clicking."""
from __future__ import annotations

from collections.abc import Iterator

import libvirt  # type: ignore[import-untyped]
import pytest
from playwright.sync_api import Page, expect

from scripts.harness.host import domain_exists
from src.app import App
from tests.browser.test_dashboard import create_vm, sign_in, vm_status
from tests.e2e.conftest import register_tiny_image
from tests.e2e.http_client import HttpClient
from tests.support import LiveServer, fetch


@pytest.fixture
def site(e2e_app: App) -> Iterator[LiveServer]:
    server = LiveServer(e2e_app)
    try:
        assert fetch(server.url, "POST", "/v1/flavors",
                     {"name": "small", "cpu": 1, "ram": 256, "disk_gb": 1}).status == 201
        yield server
    finally:
        server.stop()


def test_a_real_guest_by_clicking(page: Page, site: LiveServer,
                                  system_conn: libvirt.virConnect) -> None:
    register_tiny_image(HttpClient(site.url))
    sign_in(page, site, site.token)
    create_vm(page, "web-e2e")
    expect(vm_status(page, "web-e2e")).to_have_text("running", timeout=120000)
    vm = fetch(site.url, "GET", "/v1/vms/web-e2e").body
    assert domain_exists(system_conn, vm["id"])
    # A volume made, hot-plugged into the running guest and detached, all by clicking.
    page.get_by_role("navigation").get_by_role("link", name="Volumes", exact=True).click()
    form = page.get_by_role("form", name="Create a volume")
    form.get_by_label("Name").fill("scratch")
    form.get_by_label("Size (GiB)").fill("1")
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_have_text("Create scratch: done.", timeout=60000)
    page.get_by_role("button", name="attach volume scratch").click()
    expect(page.get_by_role("status")).to_have_text("Attach scratch to web-e2e: done.",
                                                    timeout=60000)
    domain = system_conn.lookupByUUIDString(vm["id"])
    assert "<target dev='vdc' bus='virtio'/>" in domain.XMLDesc(0)  # in the live domain
    page.get_by_role("button", name="detach volume scratch from web-e2e").click()
    expect(page.get_by_role("status")).to_have_text("Detach scratch from web-e2e: done.",
                                                    timeout=60000)
    assert "<target dev='vdc'" not in domain.XMLDesc(0)
    page.get_by_role("button", name="delete volume scratch").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Delete scratch: done.", timeout=60000)
    page.get_by_role("navigation").get_by_role("link", name="VMs", exact=True).click()
    page.get_by_role("button", name="delete web-e2e").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-vm='web-e2e']")).to_have_count(0, timeout=120000)
    assert not domain_exists(system_conn, vm["id"])
    assert page.problems == []  # type: ignore[attr-defined]
