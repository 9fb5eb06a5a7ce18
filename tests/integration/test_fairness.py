"""One project cannot hold every worker, and a task that waits too long in the queue expires."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from src.app import App
from src.config import Config
from src.database import tasks as task_dao
from src.services.tasks.runner import new_task_row
from src.utils.clock import utc_now
from tests.conftest import AppFactory
from tests.integration.test_vm_failures import GatedQemuImg, setup_image
from tests.support import Client

VM = {"cpu": 1, "ram": 128, "image_name": "base"}


def _status(client: Client, task: dict[str, Any]) -> str:
    status: str = client.get(f"/v1/tasks/{task['id']}").body["status"]
    return status


def test_a_project_at_its_cap_waits_while_another_runs(make_app: AppFactory,
                                                       config: Config) -> None:
    gated = GatedQemuImg()
    app = make_app(replace(config, max_builds=4, project_max_tasks=2), run=gated)
    admin = Client(app)
    setup_image(config, admin)
    team_a = Client(app, token=app.tokens.issue("team-a", "member")[1])
    team_b = Client(app, token=app.tokens.issue("team-b", "member")[1])
    a_tasks = [team_a.post("/v1/vms", {"name": f"a{i}", **VM}).body["task"] for i in range(3)]
    assert gated.entered.acquire(timeout=10) and gated.entered.acquire(timeout=10)
    b_task = team_b.post("/v1/vms", {"name": "b0", **VM}).body["task"]
    assert gated.entered.acquire(timeout=10), "team-b's build never started"
    assert [_status(team_a, task) for task in a_tasks] == ["running", "running", "queued"]
    assert _status(team_b, b_task) == "running"
    gated.gate.set()
    for task in (*a_tasks, b_task):
        assert admin.wait_task(task["id"])["status"] == "succeeded"


def test_a_task_queued_too_long_expires_and_leaves_the_vm_as_it_was(make_app: AppFactory,
                                                                    config: Config) -> None:
    gated = GatedQemuImg()
    app = make_app(replace(config, max_builds=1, task_queue_timeout_s=1), run=gated)
    client = Client(app)
    setup_image(config, client)
    first = client.post("/v1/vms", {"name": "first", **VM}).body
    assert gated.entered.acquire(timeout=10)
    waiting = client.post("/v1/vms", {"name": "waiting", **VM}).body
    in_use = client.get("/v1/projects/default/quota").body["in_use"]
    assert in_use["vcpus"] == 2
    time.sleep(1.2)
    assert app.runner.expire_queued() == 1
    task = client.get(f"/v1/tasks/{waiting['task']['id']}").body
    assert (task["status"], task["error"]["code"]) == ("failed", "task_expired")
    vm = client.get(f"/v1/vms/{waiting['id']}").body
    assert (vm["status"], vm["error"]["code"]) == ("error", "task_expired")
    assert client.get("/v1/projects/default/quota").body["in_use"]["vcpus"] == 1  # given back
    assert app.hypervisor.power_state(waiting["id"]) == "missing"
    gated.gate.set()
    assert client.wait_task(first["task"]["id"])["status"] == "succeeded"


def test_a_queued_delete_that_expires_leaves_the_vm_running(make_app: AppFactory,
                                                            config: Config) -> None:
    app = make_app(replace(config, task_queue_timeout_s=1, project_max_tasks=1))
    client = Client(app)
    setup_image(config, client)
    vm = client.post("/v1/vms", {"name": "keep", **VM}).body
    client.wait_task(vm["task"]["id"])
    holder = _hold_the_slot(app)  # project default's one slot is taken
    assert holder.entered.acquire(timeout=10)
    delete = client.delete(f"/v1/vms/{vm['id']}").body
    time.sleep(1.2)
    assert app.runner.expire_queued() == 1
    assert client.get(f"/v1/tasks/{delete['id']}").body["error"]["code"] == "task_expired"
    shown = client.get(f"/v1/vms/{vm['id']}").body
    assert (shown["status"], shown["error"], shown["task"]) == ("running", None, None)
    holder.gate.set()


def _hold_the_slot(app: App) -> GatedQemuImg:
    """Run a task of project default that waits at a gate, holding its slot meanwhile (the
    runner's step is our own seam: the holder's step waits, every other task runs as usual)."""
    gate = GatedQemuImg()
    task = new_task_row("holder-vm", "stop", None, "default")
    with app.db.write() as conn:
        task_dao.insert(conn, task)
    real_step = app.runner.step

    def step(task_id: str) -> float | None:
        if task_id != task.id:
            return real_step(task_id)
        gate.entered.release()
        gate.gate.wait(30)
        with app.db.write() as conn:
            task_dao.finish(conn, task.id, utc_now())
        return None

    app.runner.step = step
    app.runner.submit(task)
    return gate
