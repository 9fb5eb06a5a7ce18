"""One project's burst of tasks holds at most its IAAS_PROJECT_MAX_TASKS of the workers, so
another project's task passes it: the same test with the embedded runner here, and with Celery
workers in tests/e2e/broker/test_project_share_broker.py (where a host's queue is FIFO)."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.e2e.conftest import register_tiny_image, served
from tests.e2e.http_client import HttpClient

BURST = 8  # team-a's creates, asked for at once, ahead of team-b's stop in the host's queue


@pytest.fixture
def e2e_config(e2e_config: Config) -> Config:
    """One task of a project at a time (tiny guests on two CPUs: vCPUs overcommitted more)."""
    return replace(e2e_config, project_max_tasks=1, cpu_allocation_ratio=16.0)


def _create(client: HttpClient, name: str) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 128,
                                    "image_name": "tiny-linux"})
    assert reply.status == 202, reply.body
    return dict(reply.body)


def _queued_s(client: HttpClient, vm_id: str, action: str) -> float:
    """How long the action's task waited for a worker (accepted to started): the fairness,
    apart from how busy the machine's CPUs are while it runs."""
    reply = client.post(f"/v1/vms/{vm_id}/{action}", None)
    assert reply.status == 202, reply.body
    task = client.wait_task(reply.body["id"])
    assert task["status"] == "succeeded", task
    return _seconds(task["started_at"]) - _seconds(task["created_at"])


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def test_a_burst_of_one_project_does_not_hold_another_back(e2e_app: App) -> None:
    with served(e2e_app) as admin:
        register_tiny_image(admin)
        team_a = HttpClient(admin.base_url, e2e_app.tokens.issue("team-a", "member")[1])
        team_b = HttpClient(admin.base_url, e2e_app.tokens.issue("team-b", "member")[1])
        mine = _create(team_b, "mine")
        assert team_b.wait_task(mine["task"]["id"])["status"] == "succeeded"
        quiet = _queued_s(team_b, mine["id"], "stop")
        _queued_s(team_b, mine["id"], "start")
        burst = [_create(team_a, f"a-{index}") for index in range(BURST)]
        loaded = _queued_s(team_b, mine["id"], "stop")
        print(f"\nteam-b's stop waited for a worker {quiet:.2f} s alone, {loaded:.2f} s behind "
              f"{BURST} creates of team-a ({e2e_app.executor.name})")
        assert loaded < quiet + 1.5, (quiet, loaded)
        running_a = [team_a.get(f"/v1/tasks/{vm['task']['id']}").body["status"]
                     for vm in burst].count("running")
        assert running_a <= 1  # team-a's share: one of its tasks at a time
        for vm in burst:
            assert team_a.wait_task(vm["task"]["id"], 600)["status"] == "succeeded"
