"""What each host holds is kept as counters (migration 017) in the transaction of every claim
and release; after any mix of creates, deletes, failed builds and volume creates, deletes and
resizes they say what a recount of the rows says, and a start-up repairs any that drifted."""
from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.harness.servers import host_xml
from src.app import App
from src.config import Config
from src.database import hosts as host_dao
from src.database.db import Database
from src.hypervisor.disks import CommandFailed, run_command
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

PINNED = {"name": "pin.2", "cpu": 2, "ram": 256, "disk_gb": 1, "cpu_pinning": True}


class FailingOverlays:
    """qemu-img for real, except that an overlay's create fails while `failing` is set."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(self, argv: Sequence[str]) -> str:
        if self.failing and argv[1] == "create" and "-b" in argv:
            raise CommandFailed(argv, "qemu-img: injected failure: No space left on device")
        return run_command(argv)


def counters_and_recount(db: Database) -> tuple[dict[str, host_dao.Usage],
                                                dict[str, host_dao.Usage]]:
    with db.read() as conn:
        kept = {host: usage for host, usage in host_dao.usage(conn).items()
                if usage != host_dao.Usage()}
        return kept, host_dao.recount(conn)


class HeldSteps:
    """Holds every task step until the test opens the gate: what a request claimed can be
    checked before its task gives any of it back (a volume's growth fails on the test driver)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.gate = threading.Event()
        self.step = app.runner.step
        app.runner.step = self

    def __call__(self, task_id: str) -> float | None:
        assert self.gate.wait(30), "the test never opened the gate"
        return self.step(task_id)

    def finished(self, client: Client, reply: Any) -> dict[str, Any]:
        """The reply's task once ended, the counters checked before it ran and after."""
        assert reply.status == 202, reply.body
        task = reply.body.get("task") or reply.body
        kept, counted = counters_and_recount(self.app.db)
        assert kept == counted, f"after the request of {task['action']}"
        self.gate.set()
        try:
            return dict(client.wait_task(task["id"]))
        finally:
            self.gate.clear()


def test_counters_match_a_recount_after_every_step_of_a_random_mix(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    overlays = FailingOverlays()
    app = make_app(config, run=overlays)
    client = Client(app)
    held = HeldSteps(app)
    held.gate.set()  # not yet: the image, flavor and host are no tasks
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201
    assert client.post("/v1/flavors", PINNED).status == 201
    (tmp_path / "second.xml").write_text(host_xml("iaas-test", cpus=8, numa_nodes=2))
    assert client.post("/v1/hosts", {"name": "second",
                                     "uri": f"test://{tmp_path / 'second.xml'}"}).status == 201
    held.gate.clear()
    finished = held.finished
    chance = random.Random(17)
    vms: list[str] = []
    volumes: dict[str, int] = {}
    seen: set[str] = set()
    for step in range(60):
        kind = chance.choice(["create", "create", "pinned", "fail", "delete", "volume",
                              "volume", "resize", "unvolume"])
        host = chance.choice(["local", "second"])
        if kind in ("create", "pinned", "fail"):
            body: dict[str, Any] = {"name": f"vm-{step}", "image_name": "base", "host": host}
            body |= {"flavor": "pin.2"} if kind == "pinned" else {
                "cpu": chance.randint(1, 3), "ram": 128 * chance.randint(1, 4),
                "disk_gb": chance.randint(1, 3)}
            overlays.failing = kind == "fail"
            task = finished(client, client.post("/v1/vms", body))
            overlays.failing = False
            assert task["status"] == ("failed" if kind == "fail" else "succeeded"), task
            vms.append(body["name"])
        elif kind == "delete" and vms:
            name = vms.pop(chance.randrange(len(vms)))
            assert finished(client, client.delete(f"/v1/vms/{name}"))["status"] == "succeeded"
        elif kind == "volume":
            name, size = f"vol-{step}", chance.randint(1, 4)
            reply = client.post("/v1/volumes", {"name": name, "size_gb": size, "host": host})
            assert finished(client, reply)["status"] == "succeeded"
            volumes[name] = size
        elif kind == "resize" and volumes:
            name = chance.choice(sorted(volumes))
            reply = client.post(f"/v1/volumes/{name}/resize",
                                {"size_gb": volumes[name] + chance.randint(1, 3)})
            task = finished(client, reply)  # held at once; given back when the growth fails
            assert task["status"] == "succeeded" or task["error"]["code"] == "volume_resize_failed"
            volumes[name] = client.get(f"/v1/volumes/{name}").body["size_gb"]
        elif kind == "unvolume" and volumes:
            name = chance.choice(sorted(volumes))
            del volumes[name]
            assert finished(client, client.delete(f"/v1/volumes/{name}"))["status"] == "succeeded"
        else:
            continue
        seen.add(kind)
        kept, counted = counters_and_recount(app.db)
        assert kept == counted, f"after the task of step {step} ({kind} on {host})"
    assert seen == {"create", "pinned", "fail", "delete", "volume", "resize", "unvolume"}
    kept, _ = counters_and_recount(app.db)
    assert set(kept) == {"local", "second"} and any(usage.pinned_cpus for usage in kept.values())
    assert all(usage.volumes_gb for usage in kept.values()) or not volumes


def test_migration_017_counts_what_existing_rows_hold(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate(until=16)
    with db.write() as conn:
        conn.execute("INSERT INTO images (id, name, file, format, status, created_at) "
                     "VALUES ('i', 'base', 'base.qcow2', 'qcow2', 'active', 'now')")
        for index, (host, cpu, ram, disk, pinned, holds) in enumerate([
                ("local", 2, 512, 3, "[]", 1), ("local", 1, 256, 1, "[4, 5]", 1),
                ("h2", 4, 1024, 10, "[0]", 1), ("h2", 8, 4096, 20, "[1]", 0)]):
            conn.execute("INSERT INTO vms (id, name, domain_name, cpu, ram, disk_gb, image_id, "
                         "status, pinned_cpus, holds_resources, host, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, 'i', 'running', ?, ?, ?, 'now', 'now')",
                         (f"vm{index}", f"vm{index}", f"d{index}", cpu, ram, disk, pinned,
                          holds, host))
    assert db.migrate(until=17) == [17]
    with db.read() as conn:
        assert host_dao.usage(conn) == {
            "local": host_dao.Usage(3, 768, 4, 0, frozenset({4, 5})),
            "h2": host_dao.Usage(4, 1024, 10, 0, frozenset({0}))}


def test_a_start_recounts_counters_that_drifted(app: App, make_app: AppFactory, config: Config,
                                                base_image: dict[str, Any]) -> None:
    client = Client(app)
    for path, body in (("/v1/vms", {"name": "a", "cpu": 2, "ram": 256, "image_name": "base"}),
                       ("/v1/volumes", {"name": "v", "size_gb": 3})):
        reply = client.post(path, body)
        assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    with app.db.write() as conn:  # what a change behind the DAO's back leaves
        conn.execute("UPDATE host_usage SET vcpus = 99, volumes_gb = 0")
        conn.execute("INSERT INTO host_pinned_cpus VALUES ('local', 7, 'nobody')")
    kept, counted = counters_and_recount(app.db)
    assert kept != counted
    app.close()
    again = make_app(config)
    kept, counted = counters_and_recount(again.db)
    assert kept == counted and kept["local"].vcpus == 2 and kept["local"].volumes_gb == 3
    with again.db.write() as conn:
        assert host_dao.repair_usage(conn) == []  # nothing left to repair


def test_a_create_reads_the_counters_not_the_vm_rows(app: App,
                                                     base_image: dict[str, Any]) -> None:
    """What the scheduler sees is the counters: a host whose counters say it is full takes
    no VM, whatever its rows say."""
    client = Client(app)
    with app.db.write() as conn:
        conn.execute("INSERT INTO host_usage (host, vcpus) VALUES ('local', 1000000)")
    reply = client.post("/v1/vms", {"name": "a", "cpu": 1, "ram": 128, "image_name": "base"})
    assert reply.status == 409 and reply.error_code == "insufficient_capacity", reply.body
    assert reply.body["error"]["details"]["resource"] == "vcpu"
    with app.db.write() as conn:
        assert host_dao.repair_usage(conn) == ["local"]
    assert client.post("/v1/vms", {"name": "a", "cpu": 1, "ram": 128,
                                   "image_name": "base"}).status == 202
