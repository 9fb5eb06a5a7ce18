# ruff: noqa: F811 - the fixtures come from test_reservations, by name
"""max_runtime_s when things go wrong, on a test-driver host with two GPUs: a stop for it that
fails is asked again (the run is over only once the VM stopped)."""
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
