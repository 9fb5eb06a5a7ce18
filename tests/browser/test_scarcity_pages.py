"""The Queue and Reservations pages in a real browser, on a test-driver host with two GPUs: a
VM that waits shows its position, reason and age, and leaves the page once placed; each
booking is a bar on its GPUs' row in the host's timeline, and in the table."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from src.app import App
from src.utils.clock import utc_after
from tests.browser.conftest import shot
from tests.browser.test_dashboard import sign_in
from tests.integration.test_capacity_queue import TWO_GPUS
from tests.support import LiveServer, fetch, host_xml

ONE_GPU = {"name": "g.1", "cpu": 1, "ram": 128, "disk_gb": 1, "gpu_count": 1}


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-host.xml"
    path.write_text(host_xml("iaas-test", devices=TWO_GPUS))
    return path


def at(seconds: float) -> str:
    return utc_after(seconds)[:19] + "Z"


def gpu_vm(site: LiveServer, name: str, **fields: object) -> dict[str, object]:
    reply = fetch(site.url, "POST", "/v1/vms", {"name": name, "image_name": "tiny-linux",
                                                "flavor": "g.1", **fields})
    assert reply.status == 202, reply.body
    body: dict[str, object] = reply.body
    return body


def test_the_queue_page_shows_what_waits_and_why(page: Page, site: LiveServer,
                                                 app: App) -> None:
    assert fetch(site.url, "POST", "/v1/flavors", ONE_GPU).status == 201
    held = [gpu_vm(site, f"held-{index}") for index in range(2)]
    waiting = gpu_vm(site, "waiter", wait_for_capacity=True)
    assert waiting["status"] == "queued"
    sign_in(page, site, site.token)
    page.get_by_role("navigation").get_by_role("link", name="Queue", exact=True).click()
    expect(page.get_by_role("heading", name="Queue", level=1)).to_be_visible()
    queue = page.get_by_role("table", name="Capacity queue")
    row = queue.get_by_role("row").filter(has=page.get_by_role("rowheader", name="waiter"))
    expect(row).to_contain_text("1")
    expect(row).to_contain_text("gpu")
    expect(row).to_contain_text("ago")
    expect(row).to_contain_text("default")  # an admin sees the project
    shot(page, "queue")
    reply = fetch(site.url, "DELETE", f"/v1/vms/{held[0]['id']}")
    assert reply.status == 202
    expect(page.get_by_text("Nothing waits for capacity.")).to_be_visible()  # placed
    assert page.problems == []  # type: ignore[attr-defined]


def test_the_reservations_page_draws_each_booking_on_its_gpus(page: Page,
                                                              site: LiveServer) -> None:
    assert fetch(site.url, "POST", "/v1/flavors", ONE_GPU).status == 201
    soon = fetch(site.url, "POST", "/v1/reservations", {"flavor": "g.1", "count": 2,
                                                        "start": at(3600), "end": at(7200)})
    later = fetch(site.url, "POST", "/v1/reservations", {"flavor": "g.1", "count": 1,
                                                         "start": at(2 * 86400),
                                                         "end": at(3 * 86400)})
    far = fetch(site.url, "POST", "/v1/reservations", {"flavor": "g.1", "count": 1,
                                                       "start": at(30 * 86400),
                                                       "end": at(31 * 86400)})
    assert (soon.status, later.status, far.status) == (201, 201, 201)
    sign_in(page, site, site.token)
    page.get_by_role("navigation").get_by_role("link", name="Reservations", exact=True).click()
    expect(page.get_by_role("heading", name="Reservations", level=1)).to_be_visible()
    chart = page.get_by_role("img", name="Reservations on local over the next 7 days")
    expect(chart).to_be_visible()
    # Both GPUs have a row; the first booking is a bar on each, the second on one, the one a
    # month ahead on none (it is past the timeline), but all three are in the table.
    expect(chart.locator(f"rect[data-reservation='{soon.body['id']}']")).to_have_count(2)
    expect(chart.locator(f"rect[data-reservation='{later.body['id']}']")).to_have_count(1)
    expect(chart.locator(f"rect[data-reservation='{far.body['id']}']")).to_have_count(0)
    for gpu in ("0000:3b:00.0", "0000:5e:00.0"):
        expect(chart.get_by_text(gpu, exact=True)).to_be_visible()
    listed = page.get_by_role("table", name="Reservations")
    expect(listed.get_by_role("row")).to_have_count(4)  # the header and three bookings
    expect(listed).to_contain_text("2 × g.1")
    shot(page, "reservations")
    assert page.problems == []  # type: ignore[attr-defined]
