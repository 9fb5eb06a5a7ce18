"""A host's page in a real browser: an admin drains it after a confirm, sees the VMs moved and
the VM that stays with its reason (as GET /v1/hosts/{host} reports them); the hosts table shows
the drain too. Cold moves on the test driver, which has no live migration."""
from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import shot
from tests.browser.test_dashboard import sign_in
from tests.support import LiveServer, fetch, host_xml


def ended(site: LiveServer, task_id: str) -> None:
    task = fetch(site.url, "GET", f"/v1/tasks/{task_id}?wait=30").body
    assert task["status"] == "succeeded", task


def made(site: LiveServer, name: str) -> str:
    reply = fetch(site.url, "POST", "/v1/vms", {"name": name, "cpu": 1, "ram": 128,
                                                "image_name": "tiny-linux", "host": "local"})
    assert reply.status == 202, reply.body
    ended(site, reply.body["task"]["id"])
    return str(reply.body["id"])


def test_an_admin_drains_a_host_and_sees_what_moved_and_what_stays(
        page: Page, site: LiveServer, tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text(host_xml("iaas-test"))
    assert fetch(site.url, "POST", "/v1/hosts", {"name": "other", "uri": f"test://{other}"}
                 ).status == 201
    sleeper = made(site, "sleeper")
    made(site, "runner")  # running: it would move live, to a host libvirt cannot dial
    ended(site, fetch(site.url, "POST", f"/v1/vms/{sleeper}/stop", None).body["id"])

    sign_in(page, site, site.token)
    page.get_by_role("navigation").get_by_role("link", name="Hosts", exact=True).click()
    page.get_by_role("table", name="Hosts").get_by_role("link", name="local").click()
    expect(page.get_by_role("heading", name="Host local", level=1)).to_be_visible()
    expect(page.get_by_text("Never drained.")).to_be_visible()

    page.get_by_role("button", name="drain host local").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Drain host local?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe default
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Never drained.")).to_be_visible()
    assert fetch(site.url, "GET", "/v1/hosts/local").body["enabled"] is True

    page.get_by_role("button", name="drain host local").click()
    page.get_by_role("dialog").get_by_role("button", name="Drain").click()
    expect(page.locator("[data-drain-status='done']")).to_be_visible(timeout=30000)
    progress = page.get_by_role("list", name="Drain progress")
    expect(progress).to_contain_text("VMs moved: 1")
    expect(progress).to_contain_text("left: 1")
    expect(page.get_by_role("table", name="Moves")).to_contain_text("sleeper")
    stays = page.get_by_role("table", name="VMs that stay")
    expect(stays).to_contain_text("runner")
    expect(stays).to_contain_text("address")  # the reason, as the API gives it
    expect(page.get_by_text("Takes new VMs")).to_be_visible()
    shot(page, "host-drained")

    drain = fetch(site.url, "GET", "/v1/hosts/local").body["drain"]
    assert (drain["status"], drain["moved"], [vm["vm"] for vm in drain["unmovable"]]) == (
        "done", 1, ["runner"])
    page.get_by_role("navigation").get_by_role("link", name="Hosts", exact=True).click()
    expect(page.get_by_role("table", name="Hosts")).to_contain_text("done: 1 of 2 moved, 1 left")
    assert page.problems == []  # type: ignore[attr-defined]  # no script error, no CSP refusal
