"""Drains of a host of libvirt's test driver: it takes no new VMs, its VMs move one task each
and IAAS_DRAIN_PARALLEL at a time (cold here: the test driver has no live migration), and the
VMs that cannot move stay, listed with the reason."""
from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

from src.app import App, build_core
from src.config import Config
from src.database import tasks as task_dao
from src.services.tasks.runner import new_task_row
from src.utils.clock import utc_after
from tests.conftest import AppFactory
from tests.integration.test_migrations import GPU_FLAVOR, created, gpu_pair
from tests.support import Client


def drained_pair(make_app: AppFactory, config: Config, tmp_path: Path) -> tuple[App, Client]:
    """The two GPU hosts of the migration tests, a drain moving one VM at a time."""
    return gpu_pair(make_app, config, tmp_path, drain_parallel=1)


def test_a_drain_moves_what_it_can_one_at_a_time_and_lists_what_stays(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    _, client = drained_pair(make_app, config, tmp_path)
    assert client.post("/v1/flavors", GPU_FLAVOR).status == 201
    created(client, "trainer", flavor="g.1")  # GPUs: moves cold
    for name in ("sleeper-1", "sleeper-2"):
        created(client, name)
        assert client.wait_task(client.post(f"/v1/vms/{name}/stop", None).body["id"]
                                )["status"] == "succeeded"
    runner = created(client, "runner")  # live only, to a host no libvirtd can dial: stays

    reply = client.post("/v1/hosts/local/drain", None)
    assert reply.status == 202, reply.body
    assert (reply.body["enabled"], reply.body["state"]) == (False, "disabled")
    assert reply.body["drain"]["vms"] == 4
    moves = [{"id": task["task_id"]} for task in reply.body["drain"]["tasks"]]
    assert len(moves) == 3
    for task in moves:
        assert client.wait_task(task["id"])["status"] == "succeeded"

    drain = client.get("/v1/hosts/local").body["drain"]
    assert (drain["status"], drain["moved"], drain["moving"], drain["waiting"]) == (
        "done", 3, 0, 0)
    assert [(vm["vm"], vm["vm_id"]) for vm in drain["unmovable"]] == [("runner", runner["id"])]
    assert "address" in drain["unmovable"][0]["reason"]
    hosts = {vm["name"]: vm["host"] for vm in client.get("/v1/vms").body["vms"]}
    assert hosts == {"trainer": "other", "sleeper-1": "other", "sleeper-2": "other",
                     "runner": "local"}
    spans = sorted((task["started_at"], task["finished_at"])
                   for task in (client.get(f"/v1/tasks/{move['id']}").body for move in moves))
    for (_, finished), (started, _) in pairwise(spans):
        assert started >= finished, spans  # IAAS_DRAIN_PARALLEL=1: never two at once

    # A drained host takes no new VMs; draining it again moves nothing twice.
    assert client.post("/v1/vms", {"name": "new", "image_name": "base", "cpu": 1, "ram": 512,
                                   "host": "local"}).error_code is not None
    again = client.post("/v1/hosts/local/drain", {})
    assert again.status == 202 and again.body["drain"]["vms"] == 1


def test_drains_that_are_refused(make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app, app_client = drained_pair(make_app, config, tmp_path)
    member = Client(app, app.tokens.issue("default", "member")[1])
    assert member.post("/v1/hosts/local/drain", None).status == 403
    assert app_client.post("/v1/hosts/nowhere/drain", None).error_code == "host_not_found"
    assert app_client.post("/v1/hosts/local/drain", {"x": 1}).error_code == "validation_failed"
    assert app_client.get("/v1/hosts/local").body["drain"] is None
    assert app_client.get("/v1/hosts/local").body["enabled"] is True


def test_a_drains_move_waiting_its_turn_outlives_the_queue_timeout(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    """Another task queued past IAAS_TASK_QUEUE_TIMEOUT expires; a drain's move is only waiting
    for its drain's earlier moves, so neither the step nor the broker's sweep ends it."""
    _, client = drained_pair(make_app, config, tmp_path)
    vms = [created(client, name)["id"] for name in ("a", "b")]
    core = build_core(replace(config, task_queue_timeout_s=60))
    core.hosts.start()
    try:
        old = utc_after(-3600)
        ids = {}
        with core.db.write() as conn:
            for vm_id, drain in zip(vms, (None, "local"), strict=True):
                args = {"live": True} | ({"drain": drain} if drain else {})
                row = replace(new_task_row(vm_id, "migrate", None), created_at=old,
                              executor="celery", payload=json.dumps({"args": args}))
                task_dao.insert(conn, row)
                ids[drain] = row.id
        with core.db.read() as conn:
            stale = task_dao.stale_queued(conn, "celery", utc_after(-60))
        assert [task.id for task in stale] == [ids[None]]
        for task_id in ids.values():
            core.execution.step(task_id)
        with core.db.read() as conn:
            ended = {drain: task_dao.get(conn, task_id) for drain, task_id in ids.items()}
        assert ended[None] is not None and ended[None].error_code == "task_expired"
        # It ran (and, with no move recorded for it here, found nothing to move).
        assert ended["local"] is not None and ended["local"].error_code == "migration_gone"
    finally:
        core.hosts.close()
