# ruff: noqa: F811 - the fixtures come from test_reservations, by name
"""A VM's max_runtime_s over HTTP on a test-driver host with two GPUs: shown as stop_at while it
runs, counted on by the queue's estimated_start_at, then the VM is stopped (never deleted) and
its GPUs go to what waits; a start begins a new run of the same limit."""
from __future__ import annotations

from typing import Any

from src.app import App
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import create, member, queued, running, until
from tests.integration.test_reservations import (  # noqa: F401 - fixtures
    quick_app,
    served,
    stopped_for,
    test_host,
)


def stop_at(client: HttpClient, vm: dict[str, Any]) -> str | None:
    found: str | None = client.get(f"/v1/vms/{vm['id']}").body["stop_at"]
    return found


def test_a_run_ends_at_max_runtime_and_its_gpu_goes_to_what_waits(quick_app: App,
                                                                  served: str) -> None:
    team_a, team_b = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    limited = create(team_a, "limited", max_runtime_s=6)
    assert (limited["max_runtime_s"], limited["stop_at"]) == (6, None)  # not running yet
    endless = running(team_a, create(team_a, "endless"))
    assert (endless["max_runtime_s"], endless["stop_at"]) == (None, None)
    running(team_a, limited)
    ends = until(lambda: stop_at(team_a, limited), "its run's end is shown")
    waiting = queued(team_b, "waiting")
    assert waiting["queue"]["estimated_start_at"] == ends  # the one GPU known to come back

    stopped = stopped_for(team_a, limited, "max_runtime_reached")
    assert stopped["stop_at"] is None and stopped["max_runtime_s"] == 6
    placed = running(team_b, waiting)
    assert placed["gpus"] and placed["gpus"] != endless["gpus"]  # the GPU limited gave back

    reply = team_a.post(f"/v1/vms/{limited['id']}/start", None)  # its GPU is taken now
    assert reply.status == 409, reply.body
    assert reply.body["error"]["code"] == "insufficient_capacity"


def test_a_start_begins_a_new_run_of_the_same_limit(quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    vm = running(team, create(team, "vm", "c.1", max_runtime_s=2))
    first = until(lambda: stop_at(team, vm), "its run's end is shown")
    stopped_for(team, vm, "max_runtime_reached")
    started = team.post(f"/v1/vms/{vm['id']}/start", None)
    assert started.status == 202, started.body
    assert team.wait_task(started.body["id"])["status"] == "succeeded"
    second = until(lambda: stop_at(team, vm), "the new run's end is shown")
    assert second > first


def test_a_bad_max_runtime_is_refused_and_makes_nothing(quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    for bad in (0, -5, "60", 1.5, 366 * 86400 + 1, None):
        reply = team.post("/v1/vms", {"name": "bad", "image_name": "base", "flavor": "c.1",
                                      "max_runtime_s": bad})
        assert (reply.status, reply.body["error"]["code"]) == (400, "validation_failed"), bad
    assert team.get("/v1/vms").body["vms"] == []
