"""max_runtime_s with a real guest: its run ends at its stop_at (the domain shut off, the VM
and its disk kept, the stop in its history), and a start begins a new run of the same limit.
The GPUs such a stop gives to what waits are shown on test-driver GPU hosts
(tests/integration/test_max_runtime.py): this machine lends no GPU."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.e2e.conftest import register_tiny_image, served
from tests.e2e.http_client import HttpClient

VM = {"cpu": 1, "ram": 128, "image_name": "tiny-linux"}


@pytest.fixture
def e2e_config(e2e_config: Config) -> Config:
    return replace(e2e_config, reservation_tick_s=0.5)  # the capacity clock looks twice a second


def shown_when(client: HttpClient, vm: dict[str, Any], check: Any, what: str,
               deadline_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while not check(shown := client.get(f"/v1/vms/{vm['id']}").body):
        assert time.monotonic() < deadline, f"never {what}: {shown}"
        time.sleep(0.25)
    body: dict[str, Any] = shown
    return body


def test_a_run_ends_at_its_stop_at_and_a_start_begins_another(e2e_app: App) -> None:
    with served(e2e_app) as client:
        register_tiny_image(client)
        vm = client.post("/v1/vms", {"name": "limited", **VM, "max_runtime_s": 10}).body
        assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
        first = shown_when(client, vm, lambda shown: shown["stop_at"], "a stop_at")["stop_at"]

        stopped = shown_when(client, vm, lambda shown: shown["status"] == "stopped", "stopped")
        assert stopped["stop_at"] is None and stopped["max_runtime_s"] == 10
        assert e2e_app.hypervisor.power_state(vm["id"]) == "shutoff"
        events = client.get(f"/v1/vms/{vm['id']}/events").body["events"]
        assert ("stop", "max_runtime_reached", "succeeded") in [
            (event["action"], event["reason"], event["result"]) for event in events]

        started = client.post(f"/v1/vms/{vm['id']}/start", None)
        assert started.status == 202, started.body
        assert client.wait_task(started.body["id"])["status"] == "succeeded"
        again = shown_when(client, vm, lambda shown: shown["stop_at"], "a new stop_at")
        assert again["stop_at"] > first and again["status"] == "running"
        assert e2e_app.hypervisor.power_state(vm["id"]) == "running"
