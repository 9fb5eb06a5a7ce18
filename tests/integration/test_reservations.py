"""Reservations over HTTP on a test-driver host with two GPUs, with windows of seconds: the
ledger (no GPU claimed twice at one moment, 409 with next_start), validation, creates in a
reservation (reservation_full), others locked out during the window, preempt_at and the stop
at start, the stop at end and at an active cancel, the gpus quota, availability at a later
moment, and twenty racing bookings of the last two GPUs."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.utils.clock import utc_after
from tests.conftest import AppFactory, make_qcow2
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import (
    ONE_GPU,
    QUICK,
    TWO_GPU,
    TWO_GPUS,
    create,
    member,
    queued,
    running,
    status_of,
    until,
)
from tests.support import LiveServer, host_xml, race


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-host.xml"
    path.write_text(host_xml("iaas-test", devices=TWO_GPUS))
    return path


@pytest.fixture
def quick_app(make_app: AppFactory, config: Config) -> App:
    return make_app(replace(config, **QUICK))


@pytest.fixture
def served(quick_app: App) -> Iterator[str]:
    """The app (its clock looks ten times a second) behind a live server, with image `base`,
    the GPU flavors g.1 and g.2, and a CPU-only flavor."""
    server = LiveServer(quick_app)
    admin = HttpClient(server.url)
    make_qcow2(quick_app.config.images_dir / "base.qcow2")
    assert admin.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                     "format": "qcow2"}).status == 201
    for flavor in (ONE_GPU, TWO_GPU, {"name": "c.1", "cpu": 1, "ram": 256, "disk_gb": 1}):
        assert admin.post("/v1/flavors", flavor).status == 201
    yield server.url
    server.stop()


def at(seconds: float) -> str:
    """RFC 3339, second precision, seconds from now."""
    return utc_after(seconds)[:19] + "Z"


def book(client: HttpClient, count: int, start: str, end: str, flavor: str = "g.1",
         status: int = 201, **fields: Any) -> dict[str, Any]:
    reply = client.post("/v1/reservations", {"flavor": flavor, "count": count, "start": start,
                                             "end": end, **fields})
    assert reply.status == status, reply.body
    body: dict[str, Any] = reply.body
    return body


def reservation_status(client: HttpClient, booked: dict[str, Any]) -> str:
    status: str = client.get(f"/v1/reservations/{booked['id']}").body["status"]
    return status


def reasons(client: HttpClient, vm: dict[str, Any]) -> list[str | None]:
    return [event["reason"] for event in client.get(f"/v1/vms/{vm['id']}/events").body["events"]]


def stopped_for(client: HttpClient, vm: dict[str, Any], reason: str) -> dict[str, Any]:
    """The VM once stopped by the platform for reason (said in its history), holding no GPU."""
    until(lambda: status_of(client, vm) == "stopped" and reason in reasons(client, vm),
          f"{vm['name']} stopped for {reason}")
    shown: dict[str, Any] = until(lambda: (body := client.get(f"/v1/vms/{vm['id']}").body)
                                  ["gpus"] == [] and body, f"{vm['name']} gave its GPUs back")
    return shown


def test_a_gpu_is_never_claimed_twice_at_one_moment_and_a_conflict_offers_next_start(
        quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    first = book(team, 2, at(60), at(120))
    assert (first["status"], first["project"], first["count"]) == ("pending", "team-a", 2)
    assert first["hosts"] == [{"host": "local", "gpus": ["0000:3b:00.0", "0000:5e:00.0"]}]
    conflict = book(team, 1, at(90), at(150), status=409)["error"]
    assert conflict["code"] == "reservation_conflict"
    assert conflict["details"]["next_start"] == first["end"]  # when the same 60 s fit
    after = book(team, 1, first["end"], at(180))  # [start, end): touching windows may follow
    assert after["hosts"][0]["gpus"] == ["0000:3b:00.0"]
    listed = team.get("/v1/reservations").body["reservations"]
    assert [entry["id"] for entry in listed] == [first["id"], after["id"]]
    other = member(quick_app, served, "team-b")
    assert other.get(f"/v1/reservations/{first['id']}").status == 404
    assert other.get("/v1/reservations").body["reservations"] == []
    assert len(HttpClient(served).get("/v1/reservations").body["reservations"]) == 2


@pytest.mark.parametrize(("body", "code"), [
    ({"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}, "reservation_in_past"),
    ({"start": "+60", "end": "+30"}, "reservation_end_before_start"),
    ({"start": "+60", "end": "+60"}, "reservation_end_before_start"),
    ({"start": "now", "end": "+8000000"}, "reservation_too_far"),
    ({"start": "tomorrow", "end": "+60"}, "reservation_bad_time"),
    ({"start": "now", "end": "2026-13-01T00:00:00Z"}, "reservation_bad_time"),
    ({"start": "now", "end": "+60", "flavor": "c.1"}, "flavor_without_gpus"),
    ({"start": "now", "end": "+60", "flavor": "nope"}, "flavor_not_found"),
    ({"start": "now", "end": "+60", "count": 0}, "validation_failed"),
])
def test_a_bad_window_or_flavor_is_400_and_books_nothing(quick_app: App, served: str,
                                                         body: dict[str, Any],
                                                         code: str) -> None:
    team = member(quick_app, served, "team-a")
    fields = {"flavor": "g.1", "count": 1, **body}
    for key in ("start", "end"):
        if str(fields[key]).startswith("+"):
            fields[key] = at(float(str(fields[key])[1:]))
    reply = team.post("/v1/reservations", fields)
    assert (reply.status, reply.body["error"]["code"]) == (400, code), reply.body
    assert reply.body["error"]["message"]
    assert team.get("/v1/reservations").body["reservations"] == []


def test_members_book_for_their_own_project_only(quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    member(quick_app, served, "team-b")
    reply = team.post("/v1/reservations", {"flavor": "g.1", "count": 1, "start": at(60),
                                           "end": at(120), "project": "team-b"})
    assert (reply.status, reply.body["error"]["code"]) == (403, "forbidden")
    booked = book(HttpClient(served), 1, at(60), at(120), project="team-b")
    assert booked["project"] == "team-b"


def test_during_the_window_only_its_project_uses_its_gpus_then_its_vms_stop_at_end(
        quick_app: App, served: str) -> None:
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    booked = book(owner, 2, "now", at(8))
    until(lambda: reservation_status(owner, booked) == "active", "the window began")
    refused = other.post("/v1/vms", {"name": "intruder", "image_name": "base", "flavor": "g.1"})
    assert (refused.status, refused.body["error"]["code"]) == (409, "insufficient_capacity")
    availability = other.get("/v1/flavors/g.1/availability").body
    assert availability["available"] == 0
    plain = owner.post("/v1/vms", {"name": "plain", "image_name": "base", "flavor": "g.1"})
    assert plain.status == 409  # its own project too, outside the reservation
    wrong = owner.post("/v1/vms", {"name": "wrong", "image_name": "base", "flavor": "g.2",
                                   "reservation": booked["id"]})
    assert (wrong.status, wrong.body["error"]["code"]) == (409, "reservation_flavor_mismatch")
    foreign = other.post("/v1/vms", {"name": "foreign", "image_name": "base", "flavor": "g.1",
                                     "reservation": booked["id"]})
    assert (foreign.status, foreign.body["error"]["code"]) == (400, "reservation_not_found")
    vms = [create(owner, f"r{index}", reservation=booked["id"]) for index in range(2)]
    full = owner.post("/v1/vms", {"name": "r2", "image_name": "base", "flavor": "g.1",
                                  "reservation": booked["id"]})
    assert (full.status, full.body["error"]["code"]) == (409, "reservation_full")
    shown = [running(owner, vm) for vm in vms]
    assert sorted(gpu for vm in shown for gpu in vm["gpus"]) == ["0000:3b:00.0", "0000:5e:00.0"]
    assert {vm["reservation"] for vm in shown} == {booked["id"]}
    assert owner.get(f"/v1/reservations/{booked['id']}").body["vms"] == 2
    waiting = queued(other, "waiting")  # it waits for the reservation's end, and knows it
    until(lambda: (other.get(f"/v1/vms/{waiting['id']}").body["queue"] or {}).get(
        "estimated_start_at") == booked["end"], "the queue estimates the start")
    for vm in vms:
        stopped_for(owner, vm, "reservation_ended")
    assert reservation_status(owner, booked) == "ended"
    taken = running(other, waiting)["gpus"]  # the end freed the GPUs: the queue placed it
    (lost,) = [vm for vm in shown if vm["gpus"] == taken]
    (kept,) = [vm for vm in shown if vm["gpus"] != taken]
    again = owner.post(f"/v1/vms/{lost['id']}/start", None)  # its GPU is another VM's now
    assert (again.status, again.body["error"]["code"]) == (409, "insufficient_capacity")
    started = owner.post(f"/v1/vms/{kept['id']}/start", None)  # its GPU is free: taken again
    assert owner.wait_task(started.body["id"])["status"] == "succeeded"
    assert owner.get(f"/v1/vms/{kept['id']}").body["gpus"] == kept["gpus"]


def test_a_vm_on_claimed_gpus_shows_preempt_at_and_is_stopped_at_start(
        quick_app: App, served: str) -> None:
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    booked = book(owner, 1, at(6), at(120))  # room to place two VMs before it starts
    claimed = booked["hosts"][0]["gpus"]
    first = running(other, create(other, "first"))
    assert first["gpus"] != claimed and first["preempt_at"] is None  # unclaimed GPUs first
    second = running(other, create(other, "second"))
    assert (second["gpus"], second["preempt_at"]) == (claimed, booked["start"])
    preempted = stopped_for(other, second, f"preempted: reservation {booked['id']}")
    assert preempted["preempt_at"] is None
    assert status_of(other, first) == "running"
    assert reservation_status(owner, booked) == "active"
    inside = running(owner, create(owner, "inside", reservation=booked["id"]))
    assert inside["gpus"] == claimed
    refused = other.post(f"/v1/vms/{second['id']}/start", None)
    assert (refused.status, refused.body["error"]["code"]) == (409, "insufficient_capacity")
    cancelled = owner.delete(f"/v1/reservations/{booked['id']}")
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    stopped_for(owner, inside, "reservation_ended")  # an active cancel stops as at its end
    started = other.post(f"/v1/vms/{second['id']}/start", None)
    assert started.status == 202, started.body
    assert other.wait_task(started.body["id"])["status"] == "succeeded"
    assert other.get(f"/v1/vms/{second['id']}").body["gpus"] == claimed


def test_a_pending_cancel_gives_the_window_back_at_once(quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    booked = book(team, 2, at(60), at(120))
    assert book(team, 1, at(60), at(120), status=409)["error"]["code"] == "reservation_conflict"
    cancelled = team.delete(f"/v1/reservations/{booked['id']}")
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert cancelled.body["hosts"] == []
    book(team, 2, at(60), at(120))
    twice = team.delete(f"/v1/reservations/{booked['id']}")
    assert (twice.status, twice.body["error"]["code"]) == (409, "reservation_closed")


def test_reservations_count_against_the_gpus_quota_for_their_window(quick_app: App,
                                                                    served: str) -> None:
    team = member(quick_app, served, "team-a", gpus=2)
    held = running(team, create(team, "held"))
    assert held["gpus"]
    refused = book(team, 2, at(60), at(120), status=403)["error"]
    assert (refused["code"], refused["details"]["resource"]) == ("quota_exceeded", "gpus")
    booked = book(team, 1, "now", at(120))
    until(lambda: reservation_status(team, booked) == "active", "the window began")
    assert team.get("/v1/projects/team-a/quota").body["in_use"]["gpus"] == 2
    over = team.post("/v1/vms", {"name": "over", "image_name": "base", "flavor": "g.1",
                                 "wait_for_capacity": True})
    assert (over.status, over.body["error"]["code"]) == (403, "quota_exceeded")
    inside = running(team, create(team, "inside", reservation=booked["id"]))
    assert inside["gpus"]
    assert team.get("/v1/projects/team-a/quota").body["in_use"]["gpus"] == 2  # not counted twice


def test_availability_answers_for_a_later_moment(quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    booked = book(team, 2, at(60), at(120))

    def available(moment: str | None) -> int:
        reply = team.get("/v1/flavors/g.1/availability"
                         + (f"?at={moment}" if moment else ""))
        assert reply.status == 200, reply.body
        count: int = reply.body["available"]
        return count

    assert available(None) == 2
    assert available(at(90)) == 0
    assert available(booked["end"]) == 2
    bad = team.get("/v1/flavors/g.1/availability?at=soon")
    assert (bad.status, bad.body["error"]["code"]) == (400, "reservation_bad_time")


def test_twenty_racing_bookings_of_the_last_two_gpus_make_exactly_two(quick_app: App,
                                                                      served: str) -> None:
    start, end = at(60), at(120)
    replies = race(f"{served}/v1/reservations", [
        {"flavor": "g.1", "count": 1, "start": start, "end": end} for _ in range(20)])
    assert Counter(reply.status for reply in replies) == {201: 2, 409: 18}
    claimed = [reply.body["hosts"][0]["gpus"][0] for reply in replies if reply.status == 201]
    assert sorted(claimed) == ["0000:3b:00.0", "0000:5e:00.0"]
    for reply in replies:
        if reply.status == 409:
            assert reply.body["error"]["details"]["next_start"] == end
