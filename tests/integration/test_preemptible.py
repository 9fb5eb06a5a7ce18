# ruff: noqa: F811 - the fixtures come from test_reservations, by name
"""Who a reservation may preempt, over HTTP on a test-driver host with two GPUs: only VMs that
said `preemptible: true` or that landed on claimed GPUs (their preempt_at shows it), each after a
notice in its history; a VM that did neither keeps its GPU, which no booking takes."""
from __future__ import annotations

from typing import Any

from src.app import App
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import (
    create,
    member,
    running,
    status_of,
)
from tests.integration.test_reservations import (  # noqa: F401 - fixtures
    at,
    book,
    quick_app,
    served,
    stopped_for,
    test_host,
)


def history(client: HttpClient, vm: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(action, reason) of the VM's events, oldest first."""
    events = client.get(f"/v1/vms/{vm['id']}/events").body["events"]
    ordered = sorted(events, key=lambda event: event["created_at"])
    return [(event["action"], event["reason"]) for event in ordered]


def notice(booked: dict[str, Any]) -> tuple[str, str]:
    reason = f"preemption notice: reservation {booked['id']} starts at {booked['start']}"
    return ("notice", reason)


def test_preemptible_is_kept_and_shown_and_defaults_to_false(quick_app: App,
                                                             served: str) -> None:
    team = member(quick_app, served, "team-a")
    said = running(team, create(team, "said", preemptible=True))
    plain = running(team, create(team, "plain"))
    assert (said["preemptible"], plain["preemptible"]) == (True, False)
    listed = {vm["name"]: vm["preemptible"] for vm in team.get("/v1/vms").body["vms"]}
    assert listed == {"said": True, "plain": False}
    bad = team.post("/v1/vms", {"name": "bad", "image_name": "base", "flavor": "g.1",
                                "preemptible": "yes"})
    assert (bad.status, bad.body["error"]["code"]) == (400, "validation_failed")


def test_no_booking_takes_the_gpu_of_a_vm_that_is_not_preemptible(quick_app: App,
                                                                  served: str) -> None:
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    kept = running(other, create(other, "kept"))
    conflict = book(owner, 2, at(60), at(120), status=409)
    assert conflict["error"]["code"] == "reservation_conflict"
    assert conflict["error"]["details"]["next_start"] is None  # its GPU is held for good
    booked = book(owner, 1, at(60), at(120))
    assert booked["hosts"][0]["gpus"] != kept["gpus"]
    shown = other.get(f"/v1/vms/{kept['id']}").body
    assert shown["preempt_at"] is None
    assert "notice" not in [action for action, _ in history(other, kept)]


def test_a_booking_takes_a_preemptible_vms_gpu_after_a_notice_then_stops_it(
        quick_app: App, served: str) -> None:
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    plain = running(other, create(other, "plain"))
    spare = running(other, create(other, "spare", preemptible=True))
    booked = book(owner, 1, at(4), at(120))
    assert booked["hosts"][0]["gpus"] == spare["gpus"]  # never the one of `plain`
    told = other.get(f"/v1/vms/{spare['id']}").body
    assert told["preempt_at"] == booked["start"]
    assert history(other, spare)[-1] == notice(booked)
    stopped_for(other, spare, f"preempted: reservation {booked['id']}")
    actions = history(other, spare)
    assert actions.index(notice(booked)) < actions.index(
        ("stop", f"preempted: reservation {booked['id']}"))
    assert status_of(other, plain) == "running"
    assert other.get(f"/v1/vms/{spare['id']}").status == 200  # stopped, never deleted


def test_a_vm_that_lands_on_claimed_gpus_is_told_at_create(quick_app: App,
                                                           served: str) -> None:
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    booked = book(owner, 1, at(60), at(120))
    first = running(other, create(other, "first"))
    second = running(other, create(other, "second"))
    assert (first["preempt_at"], second["preempt_at"]) == (None, booked["start"])
    assert second["gpus"] == booked["hosts"][0]["gpus"]
    assert notice(booked) in history(other, second)
    assert [action for action, _ in history(other, first)] == ["create"]


def test_a_vm_started_again_on_gpus_booked_meanwhile_is_told_again(quick_app: App,
                                                                   served: str) -> None:
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    filler = running(other, create(other, "filler"))
    first = book(owner, 1, at(4), at(120))
    assert first["hosts"][0]["gpus"] != filler["gpus"]  # the filler never agreed
    lander = running(other, create(other, "lander"))
    assert lander["gpus"] == first["hosts"][0]["gpus"] and notice(first) in history(other, lander)
    stopped_for(other, lander, f"preempted: reservation {first['id']}")
    assert owner.delete(f"/v1/reservations/{first['id']}").status == 200
    second = book(owner, 1, at(60), at(120))  # its GPU is free while the lander is stopped
    assert second["hosts"][0]["gpus"] == lander["gpus"]
    started = other.post(f"/v1/vms/{lander['id']}/start", None)
    assert other.wait_task(started.body["id"])["status"] == "succeeded"
    again = other.get(f"/v1/vms/{lander['id']}").body
    assert (again["gpus"], again["preempt_at"]) == (lander["gpus"], second["start"])
    assert notice(second) in history(other, lander)
