"""The dashboard in a real browser: sign in, a VM's whole life, a member's narrower view, the
API's errors as messages, a screenshot of every page, and the VMs page's structure."""
from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from src.app import App
from tests.browser.conftest import ARTIFACTS, shot
from tests.support import LiveServer, fetch

REFERENCE = Path(__file__).with_name("reference") / "vms-page.txt"
# Roles whose names make a page's structure: landmarks, headings and controls (not cell text).
STRUCTURE_ROLES = ("banner", "navigation", "main", "region", "form", "heading", "link", "button",
                   "textbox", "combobox", "checkbox", "table", "columnheader", "status",
                   "alert", "dialog", "img")
LINE = re.compile(r'^\s*- (\w+)(?: "((?:[^"\\]|\\.)*)")?')


def sign_in(page: Page, site: LiveServer, token: str) -> None:
    page.goto(site.url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def vm_status(page: Page, name: str) -> object:
    return page.locator(f"tr[data-vm='{name}'] td").first


def create_vm(page: Page, name: str) -> None:
    page.get_by_role("heading", name="Create a VM").wait_for()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Flavor").select_option("small")
    page.get_by_label("Image").select_option("tiny-linux")
    page.get_by_role("button", name="Create VM").click()


def test_an_admin_creates_stops_starts_and_deletes_a_vm(page: Page, site: LiveServer) -> None:
    sign_in(page, site, site.token)
    expect(page.get_by_text("project default · admin")).to_be_visible()
    create_vm(page, "demo-01")
    expect(page.get_by_role("status")).to_have_text("Creating demo-01…")
    expect(vm_status(page, "demo-01")).to_have_text("running")
    shot(page, "vms")
    for action, status in (("stop", "stopped"), ("start", "running")):
        page.get_by_role("button", name=f"{action} demo-01").click()
        expect(vm_status(page, "demo-01")).to_have_text(status)
    page.get_by_role("link", name="demo-01").click()
    expect(page.get_by_role("heading", name="VM demo-01", level=1)).to_be_focused()
    expect(page.get_by_role("img", name=re.compile("CPU and memory chart, last"))).to_be_visible()
    expect(page.get_by_role("table", name="Events")).to_contain_text("start")
    nics = page.get_by_role("table", name="Network interfaces")
    expect(nics).to_contain_text("iaas-test")  # the host's network: no networks were asked for
    expect(nics).to_contain_text(re.compile(r"52:54:00(:[0-9a-f]{2}){3}"))
    facts = page.locator("dl.facts")
    expect(facts.locator("dt", has_text="Security groups")).to_be_visible()
    expect(facts.locator("dt:has-text('Security groups') + dd")).to_have_text("default")
    shot(page, "vm-detail")
    for section in ("Images", "GPUs", "Hosts", "Audit"):
        page.get_by_role("navigation").get_by_role("link", name=section, exact=True).click()
        expect(page.get_by_role("heading", name=section, level=1)).to_be_visible()
        expect(page.get_by_text("Loading…")).to_have_count(0)
        shot(page, section.lower())
    expect(page.get_by_role("table", name="Audit trail")).to_contain_text("/v1/vms")
    page.get_by_role("link", name="VMs", exact=True).click()
    page.get_by_role("button", name="delete demo-01").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete VM demo-01?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe default
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-vm='demo-01']")).to_have_count(0, timeout=20000)
    assert fetch(site.url, "GET", "/v1/vms").body["vms"] == []
    assert page.problems == []  # type: ignore[attr-defined]  # no script error, no CSP refusal


def test_a_member_sees_only_its_project(page: Page, site: LiveServer, app: App) -> None:
    member = app.tokens.issue("team-a", "member")[1]
    body = {"flavor": "small", "image_name": "tiny-linux"}
    assert fetch(site.url, "POST", "/v1/vms", {"name": "theirs", **body}).status == 202
    mine = fetch(site.url, "POST", "/v1/vms", {"name": "mine", **body},
                 {"Authorization": f"Bearer {member}"})
    assert mine.status == 202
    sign_in(page, site, member)
    expect(page.get_by_text("project team-a · member")).to_be_visible()
    expect(vm_status(page, "mine")).to_have_text("running")
    expect(page.locator("tr[data-vm]")).to_have_count(1)
    expect(page.get_by_role("columnheader", name="Host")).to_have_count(0)
    nav = page.get_by_role("navigation")
    for section in ("GPUs", "Hosts", "Audit"):
        expect(nav.get_by_role("link", name=section)).to_have_count(0)
    page.goto(site.url + "/#/hosts")  # typed by hand: still not shown
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(site.url + "/#/images")
    expect(page.get_by_role("heading", name="Images", level=1)).to_be_visible()
    # A member uploads and imports into its own project (private), and deletes nothing here.
    expect(page.get_by_role("heading", name="Upload an image")).to_be_visible()
    expect(page.get_by_role("button", name="delete image tiny-linux")).to_have_count(0)
    shot(page, "member-images")
    token_id = app.tokens.authenticate(f"Bearer {member}").token_id
    assert fetch(site.url, "DELETE", f"/v1/tokens/{token_id}").status == 204
    page.get_by_role("link", name="VMs", exact=True).click()  # the next call meets a 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("unauthorized")


def test_api_errors_show_as_messages(page: Page, site: LiveServer) -> None:
    sign_in(page, site, "iaas_not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("unauthorized: A valid bearer token")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(site.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_hidden()
    create_vm(page, "twice")
    expect(vm_status(page, "twice")).to_have_text("running")
    create_vm(page, "twice")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("name_conflict: A VM named 'twice' already exists.")
    expect(alert).to_contain_text("(request req-")
    shot(page, "error")
    page.goto(site.url + "/#/vms/no-such-vm")
    expect(page.get_by_role("alert")).to_contain_text("vm_not_found")


def structure(snapshot: str) -> list[str]:
    """The landmark, heading and control lines of an ARIA snapshot, indented as found."""
    kept = []
    for line in snapshot.splitlines():
        found = LINE.match(line)
        if found and found[1] in STRUCTURE_ROLES:
            depth = (len(line) - len(line.lstrip())) // 2
            kept.append("  " * depth + (f'{found[1]} "{found[2]}"' if found[2] else found[1]))
    return kept


def test_the_vms_page_keeps_its_structure(page: Page, site: LiveServer) -> None:
    """Checked against a stored reference by roles and names, not pixels (UPDATE_REFERENCE=1
    rewrites it)."""
    sign_in(page, site, site.token)
    create_vm(page, "demo-01")
    expect(vm_status(page, "demo-01")).to_have_text("running")
    page.get_by_role("status").evaluate("node => { node.textContent = '' }")
    found = structure(page.locator("body").aria_snapshot())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "vms-page.txt").write_text("\n".join(found) + "\n")
    if os.environ.get("UPDATE_REFERENCE"):
        REFERENCE.write_text("\n".join(found) + "\n")
    assert found == REFERENCE.read_text().splitlines(), (
        f"the VMs page's structure changed: compare {ARTIFACTS / 'vms-page.txt'} with "
        f"{REFERENCE} (UPDATE_REFERENCE=1 to accept)")
