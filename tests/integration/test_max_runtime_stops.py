# ruff: noqa: F811 - the fixtures come from test_reservations, by name
"""max_runtime_s when things go wrong, on a test-driver host with two GPUs: a stop for it that
fails is asked again (the run is over only once the VM stopped), and the queue's
estimated_start_at does not count a GPU a reservation claims at the end of the run on it (it
comes back at the window's end), and a VM found running without a run begins one."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import pytest

from src.app import App
from src.config import Config
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from tests.conftest import AppFactory
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import (
    QUICK,
    create,
    member,
    queued,
    running,
    until,
)
from tests.integration.test_max_runtime import stop_at
from tests.integration.test_reservations import (  # noqa: F401 - fixtures
    at,
    book,
    reservation_status,
    served,
    stopped_for,
    test_host,
)


class ForceOffRefused(Hypervisor):
    """Our own libvirt module refusing the next `refusals` hard power-offs, as a host in
    trouble does."""

    refusals: ClassVar[int] = 0

    def force_off(self, uuid: str) -> None:
        if ForceOffRefused.refusals > 0:
            ForceOffRefused.refusals -= 1
            raise HypervisorError("internal error: injected: cannot destroy the domain")
        super().force_off(uuid)


@pytest.fixture
def quick_app(make_app: AppFactory, config: Config) -> App:
    ForceOffRefused.refusals = 0
    return make_app(replace(config, **QUICK), open_libvirt=ForceOffRefused)


def events(client: HttpClient, vm: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(event["action"], event["reason"], event["result"])
            for event in client.get(f"/v1/vms/{vm['id']}/events").body["events"]]


def test_a_stop_for_max_runtime_that_fails_is_asked_again(quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    vm = running(team, create(team, "vm", "c.1", max_runtime_s=2))
    ForceOffRefused.refusals = 1  # the first stop the clock asks for fails
    until(lambda: ("stop", "max_runtime_reached", "failed") in events(team, vm),
          "the first stop failed")
    stopped_for(team, vm, "max_runtime_reached")  # its run was not forgotten: asked again
    assert ("stop", "max_runtime_reached", "succeeded") in events(team, vm)
    assert stop_at(team, vm) is None


def test_the_queue_counts_a_claimed_gpu_at_its_window_end_not_at_the_run_end(
        quick_app: App, served: str) -> None:
    """team-a's VM in a reservation of one GPU runs 20 s of a 60 s window; its other VM holds
    the other GPU for good. What team-b queues gets a GPU at the window's end, not at the run's
    (the claim keeps the GPU until then), and that GPU is counted once."""
    team_a, team_b = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    booked = book(team_a, 1, "now", at(60))
    until(lambda: reservation_status(team_a, booked) == "active", "the window began")
    inside = running(team_a, create(team_a, "inside", reservation=booked["id"],
                                    max_runtime_s=20))
    ends = until(lambda: stop_at(team_a, inside), "its run's end is shown")
    assert ends < booked["end"]
    running(team_a, create(team_a, "endless"))
    waiting = queued(team_b, "waiting")
    estimate = until(lambda: (team_b.get(f"/v1/vms/{waiting['id']}").body["queue"] or {}).get(
        "estimated_start_at"), "the queue estimates the start")
    assert estimate == booked["end"]
    two = queued(team_b, "two", "g.2")  # the GPU the window frees, and no other known to come
    assert (team_b.get(f"/v1/vms/{two['id']}").body["queue"] or {}).get(
        "estimated_start_at") is None


def test_a_vm_found_running_without_a_run_begins_one(quick_app: App, served: str) -> None:
    """A start the API did not see to its end (a restart cut it short, or the domain was
    started on the host) leaves the VM running with no run: the clock begins one, so it is
    stopped at the limit all the same."""
    team = member(quick_app, served, "team-a")
    vm = running(team, create(team, "vm", "c.1", max_runtime_s=2))
    stopped_for(team, vm, "max_runtime_reached")
    quick_app.hypervisor.start(vm["id"])  # outside the API: no start task, no run begun
    until(lambda: team.get(f"/v1/vms/{vm['id']}").body["status"] == "running",
          "the host's truth is seen")
    until(lambda: stop_at(team, vm), "a run's end is shown")
    until(lambda: events(team, vm).count(("stop", "max_runtime_reached", "succeeded")) == 2,
          "stopped at the limit again")
    assert quick_app.hypervisor.power_state(vm["id"]) == "shutoff"


def test_the_queue_does_not_count_a_gpu_a_later_window_claims_before_the_run_ends(
        quick_app: App, served: str) -> None:
    """team-a's preemptible VM runs 40 s on the GPU team-c books from 10 s to 60 s: it is
    preempted at 10 s and the GPU is the window's, so nothing comes back at its stop_at."""
    team_a, team_b = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    team_c = member(quick_app, served, "team-c")
    limited = running(team_a, create(team_a, "limited", preemptible=True, max_runtime_s=40))
    running(team_a, create(team_a, "endless"))  # the other GPU, kept from every booking
    booked = book(team_c, 1, at(10), at(60))
    assert booked["hosts"][0]["gpus"] == limited["gpus"]
    assert until(lambda: stop_at(team_a, limited), "its run's end is shown") > booked["start"]
    waiting = queued(team_b, "waiting")
    assert waiting["queue"]["position"] == 1  # ranked: its estimate is written
    assert waiting["queue"]["estimated_start_at"] is None


def test_a_guest_that_powered_itself_off_gives_its_gpus_back_at_its_stop_at(
        quick_app: App, served: str) -> None:
    team = member(quick_app, served, "team-a")
    vm = running(team, create(team, "vm", max_runtime_s=6))
    ends = until(lambda: stop_at(team, vm), "its run's end is shown")
    quick_app.hypervisor.force_off(vm["id"])  # as the guest's own poweroff: no task
    until(lambda: team.get(f"/v1/vms/{vm['id']}").body["status"] == "stopped",
          "the host's truth is seen")
    assert stop_at(team, vm) == ends and team.get(f"/v1/vms/{vm['id']}").body["gpus"]
    stopped_for(team, vm, "max_runtime_reached")  # its GPUs go back then
    assert stop_at(team, vm) is None
