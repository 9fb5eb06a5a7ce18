"""Phase 2's at-least-once delivery. A task's first step delivered again after its worker died:
a create whose VM was already made keeps it, one whose build had failed keeps that failure, and
neither builds twice (the crash is the database state a worker SIGKILLed between recording the
VM and recording the task's end leaves behind). A task whose message no worker ever takes
expires instead of keeping its VM busy for ever."""
from __future__ import annotations

import json
from typing import Any

from src.app import App, build_core
from src.config import Config
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.services.images.catalog import NewImage
from src.services.rules.access import Principal
from src.services.vms.compute import ComputeService, CreateRequest
from src.utils.clock import utc_after
from tests.conftest import make_qcow2
from tests.support import Client

VM = {"cpu": 1, "ram": 128, "image_name": "base"}
ADMIN = Principal("t-admin", "default", "admin")


def cut_after_the_build(app: App, task_id: str) -> None:
    """The task as a worker that died after the build, before the task's end, leaves it."""
    with app.db.write() as conn:
        conn.execute("UPDATE tasks SET status = 'running', finished_at = NULL, error_code = NULL, "
                     "error_message = NULL, payload = ? WHERE id = ?",
                     (json.dumps({"args": {"node_cpus": [], "ssh_keys": []}}), task_id))


def task_of(app: App, task_id: str) -> task_dao.TaskRow:
    with app.db.read() as conn:
        task = task_dao.get(conn, task_id)
    assert task is not None
    return task


def test_a_create_redelivered_after_its_vm_was_made_keeps_it(app: App, client: Client,
                                                              base_image: dict[str, Any]) -> None:
    vm = client.post("/v1/vms", {"name": "built", **VM}).body
    assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    cut_after_the_build(app, vm["task"]["id"])
    assert app.runner.step(vm["task"]["id"], 0) is None  # the redelivered first step
    task = task_of(app, vm["task"]["id"])
    assert (task.status, task.attempts) == ("succeeded", 2)
    shown = client.get(f"/v1/vms/{vm['id']}").body
    assert (shown["status"], shown["power_state"]) == ("running", "running")
    assert app.hosts.get("local").hypervisor.power_state(vm["id"]) == "running"


def test_a_create_redelivered_after_its_build_failed_keeps_the_failure(
        app: App, client: Client, base_image: dict[str, Any]) -> None:
    vm = client.post("/v1/vms", {"name": "failed", **VM}).body
    assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    with app.db.write() as conn:  # the build had failed and been undone when its worker died
        conn.execute("UPDATE vms SET status = 'error', error_code = 'start_failed', "
                     "error_message = 'no start' WHERE id = ?", (vm["id"],))
    cut_after_the_build(app, vm["task"]["id"])
    assert app.runner.step(vm["task"]["id"], 0) is None
    task = task_of(app, vm["task"]["id"])
    assert (task.status, task.error_code, task.error_message) == ("failed", "start_failed",
                                                                   "no start")


class Outbox:
    """The broker's side of an executor, minus the broker: tasks stay in the outbox, as when
    no worker consumes their queue."""

    name = "celery"

    def submit(self, task: task_dao.TaskRow) -> None:
        """Nothing: the message never reaches a worker."""

    def close(self) -> None:
        """Nothing to stop."""


def test_a_task_no_worker_takes_expires_and_frees_its_vm(config: Config) -> None:
    core = build_core(config)
    core.hosts.start()
    try:
        make_qcow2(config.images_dir / "base.qcow2")
        core.images.create(NewImage(name="base", format="qcow2", file="base.qcow2"), ADMIN)
        compute = ComputeService(core.db, core.hosts, core.images, Outbox(), core.capacity)
        view = compute.create(CreateRequest(name="stuck", image_name="base", cpu=1, ram=64),
                              ADMIN)
        assert core.execution.expire_stale() == 0  # not stale yet
        with core.db.write() as conn:
            conn.execute("UPDATE tasks SET created_at = ?", (utc_after(-3600),))
        assert core.execution.expire_stale() == 1
        with core.db.read() as conn:
            task = task_dao.get(conn, view.task.id)
            vm = vm_dao.get(conn, view.row.id)
        assert task is not None and (task.status, task.error_code) == ("failed", "task_expired")
        assert vm is not None and (vm.status, vm.error_code) == ("error", "task_expired")
        assert core.execution.expire_stale() == 0
    finally:
        core.hosts.close()
