"""Migrations between hosts of libvirt's test driver (which has no live migration, so these moves
are cold: the domain is defined and started on the target): the requests the API refuses, the
scheduler's pick, GPUs from the target's ledger, capacity moving in one transaction, and a move
that fails rolling back."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.database import tasks as task_dao
from src.database import vm_migrations as move_dao
from src.hypervisor.domains import MISSING
from src.services.actions.reconcile import HostReconciler
from src.services.tasks.runner import new_task_row
from src.services.vms.addresses import AddressBook
from src.utils.clock import utc_after, utc_now
from tests.conftest import AppFactory, make_qcow2
from tests.integration.test_gpus import _pci
from tests.support import Client, host_xml

GPU = _pci("0000:3b:00.0", "0x030200", 0, 12, ["0000:3b:00.0"])
GPU_FLAVOR = {"name": "g.1", "cpu": 2, "ram": 1024, "disk_gb": 1, "gpu_count": 1}


def _host(root: Path, name: str, devices: str = "", memory_gib: int = 16) -> str:
    path = root / f"{name}.xml"
    path.write_text(host_xml("iaas-test", cpus=8, memory_gib=memory_gib, devices=devices))
    return f"test://{path}"


def gpu_pair(make_app: AppFactory, config: Config, tmp_path: Path,
             **settings: Any) -> tuple[App, Client]:
    """Hosts `local` and `other` (both with one GPU, sharing this machine's files), and the
    image `base`; settings replace those of config."""
    app = make_app(replace(config, libvirt_uri=_host(tmp_path, "local", GPU), **settings))
    client = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201
    assert client.post("/v1/hosts", {"name": "other", "uri": _host(tmp_path, "other", GPU)}
                       ).status == 201
    return app, client


@pytest.fixture
def pair(make_app: AppFactory, config: Config, tmp_path: Path) -> tuple[App, Client]:
    return gpu_pair(make_app, config, tmp_path)


def created(client: Client, name: str, host: str = "local", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "image_name": "base", "host": host,
            **({"cpu": 1, "ram": 512} if "flavor" not in fields else {}), **fields}
    reply = client.post("/v1/vms", body)
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    return dict(reply.body)


def migrated(client: Client, vm: str, **body: Any) -> dict[str, Any]:
    reply = client.post(f"/v1/vms/{vm}/migrate", body)
    assert reply.status == 202, reply.body
    task: dict[str, Any] = client.wait_task(reply.body["id"])
    return task


def state_on(app: App, host: str, vm_id: str) -> str:
    return app.hosts.get(host).hypervisor.power_state(vm_id)


def allocated(client: Client, host: str) -> dict[str, int]:
    body: dict[str, int] = client.get(f"/v1/hosts/{host}").body["allocated"]
    return body


def test_a_cold_move_runs_the_vm_on_the_target_and_leaves_nothing_on_the_source(
        pair: tuple[App, Client]) -> None:
    app, client = pair
    vm = created(client, "mover")
    task = migrated(client, "mover", live=False)
    assert (task["status"], task["action"], task["progress"]["phase"]) == (
        "succeeded", "migrate", "done")
    shown = client.get("/v1/vms/mover").body
    assert (shown["host"], shown["status"]) == ("other", "running")
    assert state_on(app, "other", vm["id"]) == "running"
    assert state_on(app, "local", vm["id"]) == MISSING
    assert allocated(client, "local")["vcpus"] == 0 and allocated(client, "other")["vcpus"] == 1
    with app.db.read() as conn:
        phases = [row[0] for row in conn.execute("SELECT phase FROM vm_migrations")]
    assert phases == ["done"]
    back = migrated(client, "mover", live=False)  # and back again, by the scheduler's pick
    assert back["status"] == "succeeded" and client.get("/v1/vms/mover").body["host"] == "local"


def test_a_stopped_vm_moves_stopped(pair: tuple[App, Client]) -> None:
    app, client = pair
    vm = created(client, "sleeper")
    stop = client.post("/v1/vms/sleeper/stop", None)
    assert client.wait_task(stop.body["id"])["status"] == "succeeded"
    assert migrated(client, "sleeper", host="other")["status"] == "succeeded"  # live: moot
    assert state_on(app, "other", vm["id"]) == "shutoff"
    assert client.get("/v1/vms/sleeper").body["status"] == "stopped"
    assert app.hosts.get("other").hypervisor.autostart(vm["id"]) is False


def test_refused_moves_say_why_and_change_nothing(pair: tuple[App, Client]) -> None:
    app, client = pair
    member_client = Client(app, app.tokens.issue("default", "member")[1])
    created(client, "stay")
    cases = [
        ({}, 409, "vm_not_migratable", "without an address"),  # test:/// has no host to dial
        ({"host": "local"}, 409, "vm_not_migratable", "already"),
        ({"host": "nowhere"}, 400, "host_not_found", "nowhere"),
        ({"live": "yes"}, 400, "validation_failed", ""),
        ({"host": "Bad_Name"}, 400, "validation_failed", ""),
    ]
    for body, status, code, words in cases:
        reply = client.post("/v1/vms/stay/migrate", body)
        assert (reply.status, reply.error_code) == (status, code), (body, reply.body)
        assert words in reply.body["error"]["message"]
    assert member_client.post("/v1/vms/stay/migrate", {"live": False}).status == 403
    assert client.post("/v1/vms/nobody/migrate", {}).error_code == "vm_not_found"
    assert client.get("/v1/vms/stay").body["host"] == "local"
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM vm_migrations").fetchone()[0] == 0


def test_a_gpu_vm_moves_only_cold_with_a_gpu_of_the_target(pair: tuple[App, Client]) -> None:
    app, client = pair
    assert client.post("/v1/flavors", GPU_FLAVOR).status == 201
    vm = created(client, "trainer", flavor="g.1")
    refused = client.post("/v1/vms/trainer/migrate", {"live": True})
    assert refused.error_code == "vm_not_migratable" and "GPU" in refused.body["error"]["message"]
    assert migrated(client, "trainer", live=False)["status"] == "succeeded"
    gpus = {(gpu["host"], gpu["id"]): gpu["vm_id"] for gpu in client.get("/v1/gpus").body["gpus"]}
    assert gpus == {("local", "0000:3b:00.0"): None, ("other", "0000:3b:00.0"): vm["id"]}
    xml = app.hosts.get("other").hypervisor.domain_xml(vm["id"])
    assert "bus='0x3b'" in xml and xml.count("<hostdev") == 1
    assert client.get("/v1/vms/trainer").body["gpus"] == ["0000:3b:00.0"]


def test_a_target_without_room_is_refused(make_app: AppFactory, config: Config,
                                          tmp_path: Path) -> None:
    app = make_app(replace(config, libvirt_uri=_host(tmp_path, "local")))
    client = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    client.post("/v1/hosts", {"name": "tiny", "uri": _host(tmp_path, "tiny", memory_gib=1)})
    created(client, "big", ram=4096)
    reply = client.post("/v1/vms/big/migrate", {"live": False})
    assert reply.error_code == "insufficient_capacity", reply.body


def test_a_failed_move_rolls_back_and_the_vm_runs_on_its_source(
        pair: tuple[App, Client]) -> None:
    app, client = pair
    vm = created(client, "unlucky")
    other = app.hosts.get("other").hypervisor
    # The target already has a domain of that name (someone else's): libvirt refuses the define.
    squatter = app.hosts.get("local").hypervisor.domain_xml(vm["id"]).replace(
        f"<uuid>{vm['id']}</uuid>", "<uuid>00000000-0000-4000-8000-000000000001</uuid>")
    other.define(squatter)
    task = migrated(client, "unlucky", live=False)
    assert (task["status"], task["error"]["code"]) == ("failed", "migration_failed"), task
    assert state_on(app, "local", vm["id"]) == "running"  # started again where it was
    assert state_on(app, "other", vm["id"]) == MISSING
    shown = client.get("/v1/vms/unlucky").body
    assert (shown["host"], shown["status"]) == ("local", "running")
    assert allocated(client, "other")["vcpus"] == 0  # the claim went back
    with app.db.read() as conn:
        row = conn.execute("SELECT phase, error_code, made FROM vm_migrations").fetchone()
    assert (row[0], row[1]) == ("rolled_back", "migration_failed")
    assert ["domain", ""] in json.loads(row[2])


def interrupted_move(app: App, vm_id: str) -> str:
    """The rows of a live move to `other` whose process died during its copy: its task
    running, its row transferring; the id of its task."""
    task = replace(new_task_row(vm_id, "migrate", None, "default", "local"),
                   status="running", started_at=utc_now(), deadline=utc_after(600),
                   payload=json.dumps({"args": {"live": True}}))
    now = utc_now()
    with app.db.write() as conn:
        task_dao.insert(conn, task)
        move_dao.insert(conn, move_dao.MigrationRow(
            task_id=task.id, vm_id=vm_id, source="local", target="other", live=True,
            phase="transferring", cpu=1, ram=512, disk_gb=1, created_at=now, updated_at=now,
            was_running=True, made=[["domain", ""]]))
    return task.id


def test_a_move_cut_short_after_the_switch_is_finished_when_it_runs_again(
        pair: tuple[App, Client]) -> None:
    app, client = pair
    vm = created(client, "arrived")
    local, other = app.hosts.get("local").hypervisor, app.hosts.get("other").hypervisor
    task_id = interrupted_move(app, vm["id"])  # first: the VM is held, as during a move
    # What libvirt had done when the process died: the VM runs on the target, not here.
    other.define(local.domain_xml(vm["id"]))
    other.start(vm["id"])
    local.force_off(vm["id"])
    local.undefine(vm["id"])
    app.runner.submit(task_dao_get(app, task_id))
    task = client.wait_task(task_id)
    assert task["status"] == "succeeded", task
    shown = client.get("/v1/vms/arrived").body
    assert (shown["host"], shown["status"]) == ("other", "running")
    assert (state_on(app, "other", vm["id"]), state_on(app, "local", vm["id"])) == (
        "running", MISSING)


def test_a_move_cut_short_before_the_switch_is_rolled_back_when_it_runs_again(
        pair: tuple[App, Client]) -> None:
    app, client = pair
    vm = created(client, "stayed")
    local, other = app.hosts.get("local").hypervisor, app.hosts.get("other").hypervisor
    # The copy had begun: the target holds the incoming domain, paused; the source runs on.
    other.define(local.domain_xml(vm["id"]))
    other.start(vm["id"])
    other.suspend(vm["id"])
    task_id = interrupted_move(app, vm["id"])
    app.runner.submit(task_dao_get(app, task_id))
    task = client.wait_task(task_id)
    assert (task["status"], task["error"]["code"]) == ("failed", "migration_interrupted")
    assert "runs on host local as before" in task["error"]["message"]
    assert (state_on(app, "local", vm["id"]), state_on(app, "other", vm["id"])) == (
        "running", MISSING)
    assert client.get("/v1/vms/stayed").body["host"] == "local"
    assert allocated(client, "other")["vcpus"] == 0


def task_dao_get(app: App, task_id: str) -> task_dao.TaskRow:
    with app.db.read() as conn:
        task = task_dao.get(conn, task_id)
    assert task is not None
    return task


def test_a_domain_event_of_another_host_leaves_the_vm_alone(pair: tuple[App, Client]) -> None:
    """A migration's other end sends events too (its incoming domain starts, pauses, goes):
    only the VM's own host says what state it is in."""
    app, client = pair
    vm = created(client, "watched")
    other = app.hosts.get("other")
    other.hypervisor.define(app.hosts.get("local").hypervisor.domain_xml(vm["id"]))
    other.hypervisor.start(vm["id"])
    other.hypervisor.suspend(vm["id"])
    reconciler = HostReconciler(app.db, other, AddressBook(app.db, guest_agent=False),
                                app.runner, 30.0, use_events=False)
    assert reconciler.check_now(vm["id"]) is False
    assert client.get("/v1/vms/watched").body["status"] == "running"


def test_a_move_whose_task_ended_unfinished_is_settled_by_housekeeping(
        pair: tuple[App, Client]) -> None:
    """A migrate task failed by its deadline (task_timeout) leaves its move to the next
    housekeeping pass: here the VM never left, so the move rolls back."""
    app, client = pair
    vm = created(client, "abandoned")
    other = app.hosts.get("other").hypervisor
    other.define(app.hosts.get("local").hypervisor.domain_xml(vm["id"]))  # a half-made copy
    task_id = interrupted_move(app, vm["id"])
    with app.db.write() as conn:
        task_dao.finish(conn, task_id, utc_now(), ("task_timeout", "abandoned"))
    assert allocated(client, "other")["vcpus"] == 1  # the move's claim, counted meanwhile
    app.reconciler.sweep()
    with app.db.read() as conn:
        assert move_dao.get(conn, task_id).phase == "rolled_back"  # type: ignore[union-attr]
    assert state_on(app, "other", vm["id"]) == MISSING
    assert allocated(client, "other")["vcpus"] == 0
    assert state_on(app, "local", vm["id"]) == "running"
