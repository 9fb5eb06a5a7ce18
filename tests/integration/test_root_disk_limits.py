"""A hostile member against a VM's root disk and its volumes on the test driver: images made
from a VM count like any other image, and a snapshot never freezes a layer a VM may be
booting."""
from __future__ import annotations

import threading
import uuid
from typing import Any

from src.app import App
from src.database import snapshots as snapshot_dao
from src.database import vms as vm_dao
from src.services.volumes.layers import MAX_SNAPSHOTS
from tests.support import Client


def stopped_vm(client: Client, name: str, **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 128, "image_name": "base",
                                    **extra})
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    stop = client.post(f"/v1/vms/{name}/stop", None)
    assert client.wait_task(stop.body["id"])["status"] == "succeeded"
    return dict(reply.body)


def test_images_made_from_a_vm_count_against_the_images_quota(
        app: App, base_image: dict[str, Any]) -> None:
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    assert Client(app).request("PUT", "/v1/projects/team-a/quota", {"images": 1}).status == 200
    stopped_vm(member, "box")
    first = member.post("/v1/vms/box/image", {"name": "img-1"})
    assert first.status == 202, first.body
    assert member.wait_task(first.body["task_id"])["status"] == "succeeded"
    second = member.post("/v1/vms/box/image", {"name": "img-2"})
    assert second.status == 403 and second.error_code == "quota_exceeded", second.body
    assert second.body["error"]["details"]["resource"] == "images"
    assert member.get("/v1/images/img-2").error_code == "image_not_found"
    assert member.get("/v1/projects/team-a/quota").body["in_use"]["images"] == 1


def test_a_volume_is_not_snapshotted_under_a_vm_whose_start_is_under_way(
        app: App, base_image: dict[str, Any]) -> None:
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    volume = member.post("/v1/volumes", {"name": "data", "size_gb": 1})
    assert member.wait_task(volume.body["task"]["id"])["status"] == "succeeded"
    vm = stopped_vm(member, "box", volumes=[{"volume": "data"}])  # attached read-write
    # The start waits at a gate: the VM still reads stopped, but its domain is about to run
    # on the volume's top layer, which a snapshot would freeze under a writing guest.
    gate, real_step = threading.Event(), app.runner.step

    def gated(task_id: str) -> float | None:
        gate.wait(30)
        return real_step(task_id)
    app.runner.step = gated  # type: ignore[method-assign]
    try:
        start = member.post("/v1/vms/box/start", None)
        assert start.status == 202
        assert member.get("/v1/vms/box").body["status"] == "stopped"
        snapshot = member.post("/v1/volumes/data/snapshots", {"name": "before"})
    finally:
        gate.set()
    assert snapshot.status == 409 and snapshot.error_code == "vm_busy", snapshot.body
    assert snapshot.body["error"]["details"]["action"] == "start"
    assert member.wait_task(start.body["id"])["status"] == "succeeded"
    assert member.get("/v1/volumes/data/snapshots").body["snapshots"] == []
    assert member.get(f"/v1/vms/{vm['id']}").body["status"] == "running"


def test_a_vm_is_not_created_on_a_volume_with_a_task_under_way(
        app: App, base_image: dict[str, Any]) -> None:
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    volume = member.post("/v1/volumes", {"name": "data", "size_gb": 1})
    assert member.wait_task(volume.body["task"]["id"])["status"] == "succeeded"
    gate, real_step = threading.Event(), app.runner.step

    def gated(task_id: str) -> float | None:
        gate.wait(30)
        return real_step(task_id)
    app.runner.step = gated  # type: ignore[method-assign]
    try:  # the delete waits at the gate: the volume still reads available
        deleted = member.delete("/v1/volumes/data")
        assert deleted.status == 202
        assert member.get("/v1/volumes/data").body["status"] == "available"
        vm = member.post("/v1/vms", {"name": "box", "cpu": 1, "ram": 128,
                                     "image_name": "base", "volumes": [{"volume": "data"}]})
    finally:
        gate.set()
    assert vm.status == 409 and vm.error_code == "volume_busy", vm.body
    assert vm.body["error"]["details"]["action"] == "volume_delete"
    assert member.get("/v1/vms/box").error_code == "vm_not_found"
    assert member.wait_task(deleted.body["id"])["status"] == "succeeded"
    assert member.get("/v1/volumes/data").error_code == "volume_not_found"


def test_a_vm_does_not_start_while_its_volume_is_being_snapshotted(
        app: App, base_image: dict[str, Any]) -> None:
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    volume = member.post("/v1/volumes", {"name": "data", "size_gb": 1})
    assert member.wait_task(volume.body["task"]["id"])["status"] == "succeeded"
    stopped_vm(member, "box", volumes=[{"volume": "data"}])  # attached read-write
    gate, real_step = threading.Event(), app.runner.step

    def gated(task_id: str) -> float | None:
        gate.wait(30)
        return real_step(task_id)
    app.runner.step = gated  # type: ignore[method-assign]
    try:  # the snapshot waits at the gate, about to freeze the layer the VM would boot
        snapshot = member.post("/v1/volumes/data/snapshots", {"name": "before"})
        assert snapshot.status == 202
        start = member.post("/v1/vms/box/start", None)
    finally:
        gate.set()
    assert start.status == 409 and start.error_code == "volume_busy", start.body
    assert start.body["error"]["details"]["action"] == "volume_snapshot"
    member.wait_task(snapshot.body["task"]["id"])
    assert member.get("/v1/vms/box").body["status"] == "stopped"


def test_snapshots_of_one_volume_or_vm_are_limited(app: App, base_image: dict[str, Any]) -> None:
    """Each snapshot keeps a layer that may grow to the volume's size and deepens the chain
    every read walks: without a limit one volume's snapshots fill the host's disk."""
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    volume = member.post("/v1/volumes", {"name": "data", "size_gb": 1})
    assert member.wait_task(volume.body["task"]["id"])["status"] == "succeeded"
    for index in range(MAX_SNAPSHOTS):
        made = member.post("/v1/volumes/data/snapshots", {"name": f"s-{index}"})
        assert made.status == 202, made.body
        assert member.wait_task(made.body["task"]["id"])["status"] == "succeeded"
    over = member.post("/v1/volumes/data/snapshots", {"name": "one-more"})
    assert over.status == 409 and over.error_code == "too_many_snapshots", over.body
    assert over.body["error"]["details"]["limit"] == MAX_SNAPSHOTS
    assert len(member.get("/v1/volumes/data/snapshots").body["snapshots"]) == MAX_SNAPSHOTS
    vm = stopped_vm(member, "box")
    with app.db.write() as conn:  # as if made (the test driver cannot repoint a root disk)
        for index in range(MAX_SNAPSHOTS):
            snapshot_dao.insert(conn, snapshot_dao.SnapshotRow(
                id=str(uuid.uuid4()), name=f"s-{index}", owner=vm["id"], owner_kind="vm",
                project="team-a", layer=None, size_gb=1, status="available",
                created_at="2026-12-07T00:00:00Z"))
    refused = member.post("/v1/vms/box/snapshots", {"name": "one-more"})
    assert refused.status == 409 and refused.error_code == "too_many_snapshots", refused.body
    assert len(member.get("/v1/vms/box/snapshots").body["snapshots"]) == MAX_SNAPSHOTS


def test_a_volume_is_not_snapshotted_under_an_errored_vm_whose_domain_runs(
        app: App, base_image: dict[str, Any]) -> None:
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    volume = member.post("/v1/volumes", {"name": "data", "size_gb": 1})
    assert member.wait_task(volume.body["task"]["id"])["status"] == "succeeded"
    vm = member.post("/v1/vms", {"name": "box", "cpu": 1, "ram": 128, "image_name": "base",
                                 "volumes": [{"volume": "data"}]})  # read-write
    assert member.wait_task(vm.body["task"]["id"])["status"] == "succeeded"
    host = app.hosts.get("local").hypervisor
    assert host.power_state(vm.body["id"]) == "running"
    with app.db.write() as conn:  # a task failed after the guest came up (not the host's doing)
        vm_dao.set_status(conn, vm.body["id"], "error", "2026-12-07T00:00:00Z",
                          ("start_failed", "autostart could not be set"))
    assert member.get("/v1/vms/box").body["status"] == "error"
    snapshot = member.post("/v1/volumes/data/snapshots", {"name": "frozen"})
    assert snapshot.status == 409 and snapshot.error_code == "volume_in_use", snapshot.body
    assert member.get("/v1/volumes/data/snapshots").body["snapshots"] == []
