"""The capacity queue with real guests: a VM that waits for a vCPU is placed and boots when the
VM holding it is deleted; with Celery workers (tests/e2e/broker/test_queue_broker.py) the pass
runs in the worker that ended the delete, and the API's relay publishes the placed create."""
from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest

from src.app import App
from src.config import Config
from tests.e2e.conftest import register_tiny_image, served

VM = {"cpu": 1, "ram": 128, "image_name": "tiny-linux"}


@pytest.fixture
def e2e_config(e2e_config: Config) -> Config:
    """Room for one 1-vCPU VM on this machine, whatever its CPU count; the capacity clock out
    of the way, so only the delete's end can place what waits."""
    return replace(e2e_config, cpu_allocation_ratio=max(0.1, 1.0 / (os.cpu_count() or 1)),
                   reservation_tick_s=3600)


def test_a_waiting_vm_boots_when_the_one_before_it_is_deleted(e2e_app: App) -> None:
    with served(e2e_app) as client:
        register_tiny_image(client)
        first = client.post("/v1/vms", {"name": "first", **VM}).body
        assert client.wait_task(first["task"]["id"])["status"] == "succeeded"
        refused = client.post("/v1/vms", {"name": "now", **VM})
        assert refused.error_code == "insufficient_capacity"
        waiting = client.post("/v1/vms", {"name": "waiting", **VM, "wait_for_capacity": True})
        assert waiting.status == 202 and waiting.body["status"] == "queued", waiting.body
        assert waiting.body["queue"]["reason"] == "vcpu"
        deleted = client.delete(f"/v1/vms/{first['id']}")
        assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
        task = client.wait_task(waiting.body["task"]["id"])  # placed, then built
        assert task["status"] == "succeeded", task
        deadline = time.monotonic() + 60
        while (shown := client.get(f"/v1/vms/{waiting.body['id']}").body)["power_state"] != \
                "running":
            assert time.monotonic() < deadline, shown
            time.sleep(0.5)
        assert shown["status"] == "running" and shown["queue"] is None
        assert e2e_app.hypervisor.power_state(waiting.body["id"]) == "running"
