"""Evacuations of a host of libvirt's test driver that went down (its connection closed, as with
a dead daemon): a host that answers is refused, bad input changes nothing, VMs whose disks are
reachable are rebuilt elsewhere and those whose disks are lost only with rebuild_lost_disks, the
GPU ledgers and usage counters move with them, a failure half-way leaves nothing, and a host
that comes back loses its stale copies without ever starting them."""
from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from src.app import App, Core, build_core
from src.config import Config
from src.database import hosts as host_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.hosts import Usage
from src.hypervisor.disks import CommandFailed, Runner, run_command
from src.hypervisor.domains import MISSING
from src.hypervisor.driver import Hypervisor
from src.services.hosts.admin import HostService
from src.services.images.catalog import NewImage
from src.services.motion.evacuations import EvacuationService
from src.services.rules.access import Principal
from src.services.vms.compute import ComputeService, CreateRequest
from src.utils.clock import utc_after, utc_now
from src.vocabulary import DOMAIN_NAME_PREFIX
from tests.conftest import AppFactory, make_qcow2
from tests.integration.test_migrations import (
    GPU,
    GPU_FLAVOR,
    allocated,
    created,
    state_on,
)
from tests.integration.test_redelivery import Outbox
from tests.support import Client, host_xml

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


def _host(root: Path, name: str, domains: str = "") -> str:
    path = root / f"{name}.xml"
    path.write_text(host_xml("iaas-test", cpus=8, memory_gib=16, devices=GPU + domains))
    return f"test://{path}"


def cluster(make_app: AppFactory, config: Config, tmp_path: Path,
            run: Runner = run_command) -> tuple[App, Client, Config]:
    """Hosts `local`, `dead` and `spare` (one GPU each, sharing this machine's files), the
    image `base` and the GPU flavor g.1."""
    config = replace(config, libvirt_uri=_host(tmp_path, "local"))
    app = make_app(config, run=run)
    client = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201
    for name in ("dead", "spare"):
        assert client.post("/v1/hosts", {"name": name, "uri": _host(tmp_path, name)}
                           ).status == 201
    assert client.post("/v1/flavors", GPU_FLAVOR).status == 201
    return app, client, config


def kill(app: App, client: Client, host: str) -> None:
    """The host's libvirtd stops answering: the registry shows it down."""
    app.hosts.get(host).hypervisor.close()
    assert client.get(f"/v1/hosts/{host}").body["state"] == "down"


def lose_root_disk(config: Config, vm_id: str) -> None:
    """What a VM whose disk lived only on the dead host looks like from here: no file."""
    shutil.rmtree(config.instances_dir / vm_id)


def evacuated(client: Client, dead: str, **body: Any) -> dict[str, Any]:
    reply = client.post(f"/v1/hosts/{dead}/evacuate", body)
    assert reply.status == 202, reply.body
    for task in reply.body["tasks"]:
        assert client.wait_task(task["task_id"])["status"] == "succeeded", task
    return dict(reply.body)


def assert_ledgers_true(app: App) -> None:
    """The usage counters say what a recount says, and every GPU claim is on its VM's host."""
    with app.db.read() as conn:
        kept, counted = host_dao.usage(conn), host_dao.recount(conn)
        astray = conn.execute("SELECT a.vm_id, a.host FROM gpu_allocations a JOIN vms v ON "
                              "v.id = a.vm_id WHERE a.host != v.host").fetchall()
    for host in {*kept, *counted}:
        assert kept.get(host, Usage()) == counted.get(host, Usage()), host
    assert [tuple(row) for row in astray] == []


def reason_of(client: Client, vm: str) -> str:
    events = client.get(f"/v1/vms/{vm}/events").body["events"]
    return str(next(event for event in events if event["action"] == "evacuate")["reason"])


def test_a_host_that_answers_is_refused_and_bad_input_changes_nothing(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app, client, _ = cluster(make_app, config, tmp_path)
    created(client, "stays", host="dead")
    refused = client.post("/v1/hosts/dead/evacuate", {})
    assert (refused.status, refused.error_code) == (409, "host_not_down"), refused.body
    kill(app, client, "dead")
    member = Client(app, app.tokens.issue("default", "member")[1])
    assert member.post("/v1/hosts/dead/evacuate", {}).status == 403
    assert client.post("/v1/hosts/nowhere/evacuate", {}).error_code == "host_not_found"
    cases = [({"host": "nowhere"}, 400, "host_not_found"), ({"host": "dead"}, 400, "bad_request"),
             ({"rebuild_lost_disks": "yes"}, 400, "validation_failed"),
             ({"host": "Bad_Name"}, 400, "validation_failed"), ({"x": 1}, 400, "validation_failed")]
    for body, status, code in cases:
        reply = client.post("/v1/hosts/dead/evacuate", body)
        assert (reply.status, reply.error_code) == (status, code), (body, reply.body)
    assert client.get("/v1/hosts/dead").body["enabled"] is True
    assert client.get("/v1/vms/stays").body["host"] == "dead"
    with app.db.read() as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in (
            "vm_evacuations", "host_evacuations")]
        tasks = conn.execute("SELECT count(*) FROM tasks WHERE action = 'evacuate'").fetchone()
    assert counts == [0, 0] and tasks[0] == 0


def test_vms_are_rebuilt_elsewhere_and_lost_disks_only_with_the_flag(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app, client, config = cluster(make_app, config, tmp_path)
    keeper = created(client, "keeper", host="dead")
    sleeper = created(client, "sleeper", host="dead")
    assert client.wait_task(client.post("/v1/vms/sleeper/stop", None).body["id"]
                            )["status"] == "succeeded"
    trainer = created(client, "trainer", host="dead", flavor="g.1")
    volume = client.post("/v1/volumes", {"name": "ckpt", "size_gb": 1, "host": "dead"})
    assert client.wait_task(volume.body["task"]["id"])["status"] == "succeeded"
    orphan = created(client, "orphan", host="dead", volumes=[{"volume": "ckpt"}])
    lose_root_disk(config, orphan["id"])
    kill(app, client, "dead")

    body = evacuated(client, "dead")
    assert sorted(task["vm"] for task in body["tasks"]) == ["keeper", "sleeper", "trainer"]
    assert [(vm["vm"], vm["reason"]) for vm in body["skipped"]] == [
        ("orphan", "disks_on_down_host")]
    assert "rebuild_lost_disks" in body["skipped"][0]["message"]
    assert "its root disk and its volume(s) ckpt lived only on host dead" in body["skipped"][0][
        "message"]
    shown = {vm["name"]: vm for vm in client.get("/v1/vms").body["vms"]}
    for name, status, power in (("keeper", "running", "running"),
                                ("sleeper", "stopped", "shutoff"),
                                ("trainer", "running", "running")):
        assert shown[name]["host"] in ("local", "spare") and shown[name]["status"] == status
        vm_id = {"keeper": keeper, "sleeper": sleeper, "trainer": trainer}[name]["id"]
        assert state_on(app, shown[name]["host"], vm_id) == power
    assert app.hosts.get(shown["sleeper"]["host"]).hypervisor.autostart(sleeper["id"]) is False
    assert shown["orphan"]["host"] == "dead"
    gpus = {(gpu["host"], gpu["id"]): gpu["vm_id"] for gpu in client.get("/v1/gpus").body["gpus"]}
    assert gpus[("dead", "0000:3b:00.0")] is None
    assert gpus[(shown["trainer"]["host"], "0000:3b:00.0")] == trainer["id"]
    assert (config.instances_dir / keeper["id"] / "disk.qcow2").is_file()  # its own disk
    assert "host dead is down: rebuilt on" in reason_of(client, "keeper")
    assert "with its own root disk" in reason_of(client, "keeper")
    shown_host = client.get("/v1/hosts/dead").body
    assert shown_host["enabled"] is False
    progress = shown_host["evacuation"]
    assert (progress["status"], [vm["vm"] for vm in progress["skipped"]]) == ("done", ["orphan"])
    assert {task["status"] for task in progress["tasks"]} == {"succeeded"}
    assert sorted(vm["vm"] for vm in progress["stale_copies"]) == ["keeper", "sleeper", "trainer"]
    assert allocated(client, "dead")["vcpus"] == 1  # the orphan's, still recorded there
    assert_ledgers_true(app)

    again = evacuated(client, "dead", rebuild_lost_disks=True)
    assert [task["vm"] for task in again["tasks"]] == ["orphan"] and again["skipped"] == []
    rebuilt = client.get("/v1/vms/orphan").body
    assert rebuilt["host"] in ("local", "spare") and rebuilt["status"] == "running"
    assert (config.instances_dir / orphan["id"] / "disk.qcow2").is_file()  # a fresh one
    assert "fresh root disk from its base image base" in reason_of(client, "orphan")
    assert "volume(s) ckpt stay detached on dead" in reason_of(client, "orphan")
    ckpt = client.get("/v1/volumes/ckpt").body
    assert (ckpt["host"], ckpt["status"], ckpt["attachments"]) == ("dead", "available", [])
    assert allocated(client, "dead")["vcpus"] == 0
    assert_ledgers_true(app)


def test_a_failure_half_way_leaves_nothing_behind(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    failing: set[str] = set()  # paths qemu-img refuses to create

    def run(argv: Sequence[str]) -> str:
        if argv[:2] == ["qemu-img", "create"] and any(path in argv[-2:] for path in failing):
            raise CommandFailed(argv, "injected failure")
        return run_command(argv)

    app, client, config = cluster(make_app, config, tmp_path, run)
    orphan = created(client, "orphan", host="dead")
    lose_root_disk(config, orphan["id"])
    kill(app, client, "dead")
    folder = config.instances_dir / orphan["id"]

    def assert_nothing_left() -> None:
        assert state_on(app, "spare", orphan["id"]) == MISSING
        assert not folder.exists()
        shown = client.get("/v1/vms/orphan").body
        assert (shown["host"], shown["status"]) == ("dead", "running")
        assert allocated(client, "spare")["vcpus"] == 0
        assert_ledgers_true(app)

    # The root disk's overlay fails, after the task started and the VM's folder was made.
    failing.add(str(folder / "disk.qcow2"))
    reply = client.post("/v1/hosts/dead/evacuate", {"rebuild_lost_disks": True, "host": "spare"})
    assert reply.status == 202, reply.body
    task = client.wait_task(reply.body["tasks"][0]["task_id"])
    assert (task["status"], task["error"]["code"]) == ("failed", "overlay_failed"), task
    assert_nothing_left()
    failing.clear()

    # The define fails after the disk and the seed were made: a domain of that name is there.
    squatter = "00000000-0000-4000-8000-000000000001"
    spare = app.hosts.get("spare").hypervisor
    model = created(client, "model", host="local")["id"]
    spare.define(app.hosts.get("local").hypervisor.domain_xml(model).replace(
        f"<uuid>{model}</uuid>", f"<uuid>{squatter}</uuid>").replace(
        f"<name>{DOMAIN_NAME_PREFIX}{model}</name>",
        f"<name>{DOMAIN_NAME_PREFIX}{orphan['id']}</name>"))
    reply = client.post("/v1/hosts/dead/evacuate", {"rebuild_lost_disks": True, "host": "spare"})
    task = client.wait_task(reply.body["tasks"][0]["task_id"])
    assert (task["status"], task["error"]["code"]) == ("failed", "define_failed"), task
    assert_nothing_left()
    with app.db.read() as conn:
        phases = [row[0] for row in conn.execute("SELECT phase FROM vm_evacuations")]
    assert phases == ["rolled_back", "rolled_back"]

    spare.undefine(squatter)
    evacuated(client, "dead", rebuild_lost_disks=True, host="spare")  # it can be asked again
    assert client.get("/v1/vms/orphan").body["host"] == "spare"
    assert_ledgers_true(app)


class Watched(Hypervisor):
    """A host's connection that remembers every domain the platform starts on it."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.started: list[str] = []

    def start(self, uuid: str) -> None:
        self.started.append(uuid)
        super().start(uuid)


def test_a_host_that_comes_back_loses_its_stale_copies_and_never_starts_them(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app, client, config = cluster(make_app, config, tmp_path)
    keeper = created(client, "keeper", host="dead")
    sleeper = created(client, "sleeper", host="dead")
    assert client.wait_task(client.post("/v1/vms/sleeper/stop", None).body["id"]
                            )["status"] == "succeeded"
    dead = app.hosts.get("dead").hypervisor
    copies = {vm["id"]: dead.domain_xml(vm["id"]) for vm in (keeper, sleeper)}
    kill(app, client, "dead")
    evacuated(client, "dead")
    with app.db.read() as conn:
        stale = sorted(row[0] for row in conn.execute(
            "SELECT vm_id FROM vm_evacuations WHERE stale_on = 'dead' AND "
            "stale_cleaned_at IS NULL"))
    assert stale == sorted(copies)
    app.close()  # the API restarts ...

    # ... and the host comes back with the old domains: the keeper's running, the sleeper's not.
    old = "".join(xml.replace("<domain type='test'", f"<domain type='test' xmlns:test='{TEST_NS}'")
                  .replace("</domain>", "<test:runstate>5</test:runstate></domain>"
                           if vm_id == sleeper["id"] else "</domain>")
                  for vm_id, xml in copies.items())
    uri = _host(tmp_path, "dead", old)
    probe = Hypervisor(uri)  # a connection of its own reads the same host file
    try:
        assert probe.power_states() == {keeper["id"]: "running", sleeper["id"]: "shutoff"}
    finally:
        probe.close()
    opened: dict[str, Watched] = {}

    def open_libvirt(uri: str) -> Hypervisor:
        opened[uri] = Watched(uri)
        return opened[uri]

    back = make_app(config, open_libvirt=open_libvirt)
    returned = back.hosts.get("dead").hypervisor
    assert isinstance(returned, Watched)
    back.reconciler.sweep()
    assert {vm_id: returned.power_state(vm_id) for vm_id in copies} == {
        keeper["id"]: MISSING, sleeper["id"]: MISSING}
    assert returned.started == []  # never started, not even for a moment
    assert (config.instances_dir / keeper["id"] / "disk.qcow2").is_file()  # the rebuilt VM's
    with back.db.read() as conn:
        left = conn.execute("SELECT count(*) FROM vm_evacuations WHERE "
                            "stale_cleaned_at IS NULL").fetchone()[0]
    assert left == 0
    shown = Client(back).get("/v1/hosts/dead").body
    assert (shown["state"], shown["enabled"]) == ("disabled", False)
    assert shown["evacuation"]["stale_copies"] == []


ADMIN = Principal("t-admin", "default", "admin")


def run_as_a_worker(core: Core, task_id: str) -> task_dao.TaskRow:
    """Every step of the task, as Celery workers run them (TaskExecution.step), to its end."""
    seq = 0
    while core.execution.step(task_id, seq) is not None:
        seq += 1
    with core.db.read() as conn:
        task = task_dao.get(conn, task_id)
    assert task is not None
    return task


def test_a_worker_rebuilds_and_a_rebuild_cut_short_is_rolled_back_when_redelivered(
        config: Config, tmp_path: Path) -> None:
    config = replace(config, libvirt_uri=_host(tmp_path, "local"))
    core = build_core(config)
    core.hosts.start()
    try:
        make_qcow2(config.images_dir / "base.qcow2")
        core.images.create(NewImage(name="base", format="qcow2", file="base.qcow2"), ADMIN)
        views = HostService(core.db, core.hosts, core.capacity, core.gpus, config)
        for name in ("dead", "spare"):
            views.add({"name": name, "uri": _host(tmp_path, name)})
        compute = ComputeService(core.db, core.hosts, core.images, Outbox(), core.capacity)
        vms = [compute.create(CreateRequest(name=name, image_name="base", cpu=1, ram=64,
                                            host="dead"), ADMIN) for name in ("one", "two")]
        for view in vms:
            assert run_as_a_worker(core, view.task.id).status == "succeeded"
        core.hosts.get("dead").hypervisor.close()
        evacuations = EvacuationService(core.db, config, core.hosts, core.capacity, views,
                                        core.provisioner.shared, Outbox())
        body = evacuations.evacuate("dead", ADMIN, target="spare")
        one, two = (entry["task_id"] for entry in body["tasks"])
        spare = core.hosts.get("spare").hypervisor

        assert run_as_a_worker(core, one).status == "succeeded"
        with core.db.read() as conn:
            row = vm_dao.get(conn, vms[0].row.id)
        assert row is not None and (row.host, row.status) == ("spare", "running")
        assert spare.power_state(vms[0].row.id) == "running"

        # The second one's worker died after it had defined and started the domain: the task
        # is running with no step recorded, and the message is delivered again.
        second = vms[1].row.id
        with core.db.write() as conn:
            conn.execute("UPDATE tasks SET status = 'running', started_at = ?, deadline = ? "
                         "WHERE id = ?", (utc_now(), utc_after(600), two))
            conn.execute("UPDATE vm_evacuations SET phase = 'building', made = ? WHERE "
                         "task_id = ?", ('[["domain", ""]]', two))
        spare.define(spare.domain_xml(vms[0].row.id).replace(vms[0].row.id, second))
        spare.start(second)
        task = run_as_a_worker(core, two)
        assert (task.status, task.error_code) == ("failed", "evacuation_interrupted")
        assert spare.power_state(second) == MISSING
        assert (config.instances_dir / second / "disk.qcow2").is_file()  # its own disk stays
        with core.db.read() as conn:
            row = vm_dao.get(conn, second)
            phase = conn.execute("SELECT phase FROM vm_evacuations WHERE task_id = ?",
                                 (two,)).fetchone()[0]
            kept, counted = host_dao.usage(conn), host_dao.recount(conn)
        assert row is not None and row.host == "dead" and phase == "rolled_back"
        for host in {*kept, *counted}:
            assert kept.get(host, Usage()) == counted.get(host, Usage()), host
    finally:
        core.hosts.close()


def test_a_rebuild_whose_task_ended_unfinished_is_rolled_back_by_housekeeping(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    """An evacuate task failed by its deadline (task_timeout) mid-rebuild leaves what it made
    to the next housekeeping pass, which removes it and gives the claim back."""
    app, client, _ = cluster(make_app, config, tmp_path)
    vm = created(client, "late", host="dead", flavor="g.1")
    xml = app.hosts.get("dead").hypervisor.domain_xml(vm["id"])
    kill(app, client, "dead")
    reply = client.post("/v1/hosts/dead/evacuate", {"host": "spare"})
    task_id = reply.body["tasks"][0]["task_id"]
    assert client.wait_task(task_id)["status"] == "succeeded"
    # Replay the same evacuation as if its task had timed out half-way: the VM back on the
    # dead host, its domain defined on spare, the row building, the task failed.
    spare = app.hosts.get("spare").hypervisor
    spare.force_off(vm["id"])
    spare.undefine(vm["id"])
    spare.define(xml)
    with app.db.write() as conn:
        conn.execute("UPDATE vms SET host = 'dead' WHERE id = ?", (vm["id"],))
        conn.execute("UPDATE gpu_allocations SET host = 'spare' WHERE vm_id = ?", (vm["id"],))
        conn.execute("UPDATE vm_evacuations SET phase = 'building', made = ?, stale_on = NULL "
                     "WHERE task_id = ?", ('[["domain", ""]]', task_id))
        conn.execute("UPDATE tasks SET status = 'failed', error_code = 'task_timeout' "
                     "WHERE id = ?", (task_id,))
    assert allocated(client, "spare")["vcpus"] == 2  # the claim it still holds
    app.reconciler.sweep()
    assert state_on(app, "spare", vm["id"]) == MISSING
    assert allocated(client, "spare")["vcpus"] == 0 and allocated(client, "spare")["gpus"] == 0
    with app.db.read() as conn:
        phase, code = conn.execute("SELECT phase, error_code FROM vm_evacuations").fetchone()
    assert (phase, code) == ("rolled_back", "evacuation_unfinished")
    assert_ledgers_true(app)
