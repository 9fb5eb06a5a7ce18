"""The capacity queue over HTTP on test-driver GPU hosts: fair order by share, backfill and its
limit, expiry, cancel, quota at once, a restart, and racing queued creates placed once each."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.utils.clock import utc_after
from tests.conftest import AppFactory, make_qcow2
from tests.e2e.http_client import HttpClient
from tests.integration.test_gpus import _pci
from tests.support import Client, LiveServer, host_xml, race

TWO_GPUS = "".join([_pci("0000:3b:00.0", "0x030200", 0, 12, ["0000:3b:00.0"]),
                    _pci("0000:5e:00.0", "0x030200", 0, 13, ["0000:5e:00.0"])])
FOUR_GPUS = TWO_GPUS + "".join([_pci("0000:86:00.0", "0x030200", 0, 14, ["0000:86:00.0"]),
                                _pci("0000:af:00.0", "0x030200", 0, 15, ["0000:af:00.0"])])
ONE_GPU = {"name": "g.1", "cpu": 1, "ram": 512, "disk_gb": 1, "gpu_count": 1}
TWO_GPU = {**ONE_GPU, "name": "g.2", "gpu_count": 2}
QUICK = {"reservation_tick_s": 0.1}  # the capacity clock looks ten times a second


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-host.xml"
    path.write_text(host_xml("iaas-test", devices=TWO_GPUS))
    return path


@pytest.fixture
def served(app: App) -> Iterator[str]:
    """The app behind the wsgiref server, with image `base` and the GPU flavors."""
    server = LiveServer(app)
    admin = HttpClient(server.url)
    make_qcow2(app.config.images_dir / "base.qcow2")
    assert admin.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                     "format": "qcow2"}).status == 201
    for flavor in (ONE_GPU, TWO_GPU):
        assert admin.post("/v1/flavors", flavor).status == 201
    yield server.url
    server.stop()


def member(app: App, url: str, project: str, gpus: int | None = 4) -> HttpClient:
    """A member of project (made now) whose quota allows gpus GPUs."""
    token = app.tokens.issue(project, "member")[1]
    admin = HttpClient(url)
    assert admin.request("PUT", f"/v1/projects/{project}/quota", {"gpus": gpus}).status == 200
    return HttpClient(url, token)


def create(client: HttpClient | Client, name: str, flavor: str = "g.1",
           **fields: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "image_name": "base", "flavor": flavor,
                                    **fields})
    assert reply.status == 202, reply.body
    body: dict[str, Any] = reply.body
    return body


def queued(client: HttpClient | Client, name: str, flavor: str = "g.1",
           **fields: Any) -> dict[str, Any]:
    vm = create(client, name, flavor, wait_for_capacity=True, **fields)
    assert vm["status"] == "queued", vm
    return vm


def until(check: Callable[[], Any], what: str, deadline_s: float = 30) -> Any:
    """Poll check until it answers something true, or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
    return found


def status_of(client: HttpClient | Client, vm: dict[str, Any]) -> str:
    status: str = client.get(f"/v1/vms/{vm['id']}").body["status"]
    return status


def running(client: HttpClient | Client, vm: dict[str, Any]) -> dict[str, Any]:
    """The VM once placed and built (its create task succeeded)."""
    until(lambda: status_of(client, vm) not in ("queued", "building"), f"{vm['name']} built")
    shown: dict[str, Any] = client.get(f"/v1/vms/{vm['id']}").body
    assert shown["status"] == "running", shown
    return shown


def delete(client: HttpClient | Client, vm: dict[str, Any]) -> None:
    reply = client.delete(f"/v1/vms/{vm['id']}")
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["id"])["status"] == "succeeded"


def positions(client: HttpClient | Client) -> list[tuple[str, int]]:
    reply = client.get("/v1/queue")
    assert reply.status == 200, reply.body
    return [(entry["name"], entry["position"]) for entry in reply.body["queue"]]


def test_the_project_holding_less_goes_first_then_the_oldest(app: App, served: str) -> None:
    """The issue's example: A holds both GPUs and queues a3, then B queues b1; A's first delete
    gives its GPU to b1 (B holds none), A's second to a3."""
    team_a, team_b = member(app, served, "team-a"), member(app, served, "team-b")
    a1, a2 = create(team_a, "a1"), create(team_a, "a2")
    for vm in (a1, a2):
        assert team_a.wait_task(vm["task"]["id"])["status"] == "succeeded"
    a3 = queued(team_a, "a3")
    assert a3["task"]["status"] == "queued"
    assert a3["task"]["details"] == {"reason": "waiting_for_capacity"}
    assert (a3["queue"]["position"], a3["queue"]["reason"]) == (1, "gpu")
    assert a3["gpus"] == [] and a3["host"] is None and a3["actions"] == ["delete"]
    b1 = queued(team_b, "b1")
    assert b1["queue"]["position"] == 1  # B holds no GPU, A holds two of its four
    admin = HttpClient(served)
    assert positions(admin) == [("b1", 1), ("a3", 2)]
    assert positions(team_a) == [("a3", 2)]  # its own VMs, with their place among all
    assert [entry["project"] for entry in admin.get("/v1/queue").body["queue"]] == [
        "team-b", "team-a"]

    delete(team_a, a1)
    assert running(team_b, b1)["gpus"] == a1["gpus"]
    assert status_of(team_a, a3) == "queued"
    assert positions(admin) == [("a3", 1)]
    delete(team_a, a2)
    assert running(team_a, a3)["gpus"] == a2["gpus"]
    assert positions(admin) == []
    events = team_a.get(f"/v1/vms/{a3['id']}/events").body["events"]
    assert [(event["action"], event["result"]) for event in events] == [("create", "succeeded")]


def test_without_the_flag_nothing_changes_and_quota_is_checked_at_once(app: App,
                                                                        served: str) -> None:
    team_a = member(app, served, "team-a", gpus=3)
    held = [create(team_a, f"held-{index}") for index in range(2)]
    refused = team_a.post("/v1/vms", {"name": "now", "image_name": "base", "flavor": "g.1"})
    assert refused.status == 409 and refused.error_code == "insufficient_capacity"
    waiting = queued(team_a, "waits")
    assert team_a.get("/v1/projects/team-a/quota").body["in_use"]["gpus"] == 3
    over = team_a.post("/v1/vms", {"name": "over", "image_name": "base", "flavor": "g.1",
                                   "wait_for_capacity": True})
    assert over.status == 403 and over.error_code == "quota_exceeded"  # the waiting one counts
    assert over.body["error"]["details"]["in_use"] == 3
    bare = team_a.post("/v1/vms", {"name": "bare", "image_name": "base", "flavor": "g.1",
                                   "max_wait_s": 5})
    assert bare.status == 400  # max_wait_s says how long to wait: only with wait_for_capacity
    names = [vm["name"] for vm in team_a.get("/v1/vms").body["vms"]]
    assert sorted(names) == ["held-0", "held-1", "waits"]
    assert waiting["queue"]["expires_at"] > waiting["queue"]["since"]
    for vm in held:
        assert team_a.wait_task(vm["task"]["id"])["status"] == "succeeded"


def test_a_vm_that_no_host_could_ever_hold_is_refused_at_once(app: App, served: str) -> None:
    admin = HttpClient(served)
    assert admin.post("/v1/flavors", {**ONE_GPU, "name": "g.3", "gpu_count": 3}).status == 201
    refused = admin.post("/v1/vms", {"name": "huge", "image_name": "base", "flavor": "g.3",
                                     "wait_for_capacity": True})
    assert refused.status == 409 and refused.error_code == "insufficient_capacity"
    assert refused.body["error"]["details"]["waitable"] is False
    assert admin.get("/v1/vms").body["vms"] == []


def test_a_deleted_queued_vm_is_gone_at_once_and_nothing_was_made(app: App,
                                                                   served: str) -> None:
    admin = HttpClient(served)
    held = [create(admin, f"held-{index}") for index in range(2)]
    first, second = queued(admin, "first"), queued(admin, "second")
    assert second["queue"]["position"] == 2
    reply = admin.delete(f"/v1/vms/{first['id']}")
    assert reply.status == 202 and reply.body["status"] == "succeeded", reply.body
    assert admin.get(f"/v1/vms/{first['id']}").status == 404
    task = admin.get(f"/v1/tasks/{first['task']['id']}").body
    assert (task["status"], task["error"]["code"]) == ("failed", "cancelled")
    assert app.hypervisor.power_state(first["id"]) == "missing"
    assert positions(admin) == [("second", 1)]
    for vm in held:
        admin.wait_task(vm["task"]["id"])
    delete(admin, held[0])
    assert running(admin, second)["gpus"] == held[0]["gpus"]


@pytest.fixture
def quick_app(make_app: AppFactory, config: Config) -> App:
    return make_app(replace(config, **QUICK))


def test_a_vm_waits_at_most_max_wait_s_then_holds_nothing(quick_app: App) -> None:
    server = LiveServer(quick_app)
    try:
        admin = HttpClient(server.url)
        _base(quick_app, admin)
        held = [create(admin, f"held-{index}") for index in range(2)]
        late = queued(admin, "late", max_wait_s=1)
        assert until(lambda: status_of(admin, late) == "error", "the wait expired", 10)
        shown = admin.get(f"/v1/vms/{late['id']}").body
        assert shown["error"]["code"] == "capacity_wait_expired" and shown["queue"] is None
        task = admin.get(f"/v1/tasks/{late['task']['id']}").body
        assert (task["status"], task["error"]["code"]) == ("failed", "capacity_wait_expired")
        assert positions(admin) == []
        in_use = admin.get("/v1/projects/default/quota").body["in_use"]
        assert (in_use["gpus"], in_use["vcpus"], in_use["instances"]) == (2, 2, 3)
        assert admin.post(f"/v1/vms/{late['id']}/start", None).error_code == "invalid_state"
        reply = admin.delete(f"/v1/vms/{late['id']}")  # nothing of it is on any host
        assert reply.status == 202 and reply.body["status"] == "succeeded"
        assert admin.get(f"/v1/vms/{late['id']}").status == 404
        for vm in held:
            admin.wait_task(vm["task"]["id"])
    finally:
        server.stop()


def _base(app: App, admin: HttpClient) -> None:
    make_qcow2(app.config.images_dir / "base.qcow2")
    assert admin.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                     "format": "qcow2"}).status == 201
    for flavor in (ONE_GPU, TWO_GPU):
        assert admin.post("/v1/flavors", flavor).status == 201


def test_the_queue_survives_an_api_restart(make_app: AppFactory, config: Config) -> None:
    first = make_app(config)
    client = Client(first)
    make_qcow2(config.images_dir / "base.qcow2")
    client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    client.post("/v1/flavors", ONE_GPU)
    held = [create(client, f"held-{index}") for index in range(2)]
    for vm in held:
        client.wait_task(vm["task"]["id"])
    waiting = queued(client, "waiting")
    first.close()
    again = Client(make_app(config))  # a new process: the queue is what the database says
    shown = again.get(f"/v1/vms/{waiting['id']}").body
    assert (shown["status"], shown["task"]["status"], shown["queue"]["position"]) == (
        "queued", "queued", 1)
    delete(again, held[1])
    assert running(again, waiting)["gpus"] == held[1]["gpus"]


def test_a_smaller_vm_passes_a_larger_one_until_the_backfill_limit(
        make_app: AppFactory, config: Config) -> None:
    """Backfill: `pair` (2 GPUs) waits behind nothing; when one GPU frees, `single` (1 GPU,
    queued later) takes it. Past IAAS_QUEUE_BACKFILL_LIMIT, `pair` is passed no more: the freed
    GPU stays free for it, and neither `later` nor a new create takes it."""
    app = make_app(replace(config, queue_backfill_limit_s=1.0))
    admin = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    admin.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    admin.post("/v1/flavors", ONE_GPU)
    admin.post("/v1/flavors", TWO_GPU)
    held = [create(admin, f"held-{index}") for index in range(2)]
    for vm in held:
        admin.wait_task(vm["task"]["id"])
    pair = queued(admin, "pair", "g.2")
    single = queued(admin, "single")
    delete(admin, held[0])  # one GPU frees: pair does not fit, single does (backfill)
    assert running(admin, single)["gpus"] == held[0]["gpus"]
    assert status_of(admin, pair) == "queued"
    later = queued(admin, "later")
    until(lambda: admin.get(f"/v1/vms/{pair['id']}").body["queue"]["since"] < utc_after(-1.2),
          "pair waits past the backfill limit", 5)
    delete(admin, single)  # one GPU frees again: pair still does not fit, but it is overdue
    app.clock.tick()
    assert status_of(admin, later) == "queued"  # not passed any more
    refused = admin.post("/v1/vms", {"name": "new", "image_name": "base", "flavor": "g.1"})
    assert refused.error_code == "insufficient_capacity"  # nor by a new create
    delete(admin, held[1])
    assert len(running(admin, pair)["gpus"]) == 2
    assert status_of(admin, later) == "queued"


def test_a_host_added_or_enabled_places_what_waits(make_app: AppFactory, config: Config,
                                                   tmp_path: Path) -> None:
    app = make_app(replace(config, **QUICK))
    admin = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    admin.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    admin.post("/v1/flavors", ONE_GPU)
    for index in range(2):
        admin.wait_task(create(admin, f"held-{index}")["task"]["id"])
    second = tmp_path / "second.xml"
    second.write_text(host_xml("iaas-test", devices=TWO_GPUS))
    assert admin.post("/v1/hosts", {"name": "second", "uri": f"test://{second}"}).status == 201
    assert admin.request("PATCH", "/v1/hosts/second", {"enabled": False}).status == 200
    waiting = queued(admin, "waiting")
    assert admin.request("PATCH", "/v1/hosts/second", {"enabled": True}).status == 200
    assert running(admin, waiting)["host"] == "second"
    third = tmp_path / "third.xml"
    third.write_text(host_xml("iaas-test", devices=TWO_GPUS))
    admin.wait_task(create(admin, "more")["task"]["id"])  # now second is full too
    late = queued(admin, "late")
    assert admin.post("/v1/hosts", {"name": "third", "uri": f"test://{third}"}).status == 201
    assert running(admin, late)["host"] == "third"


def test_twenty_racing_queued_creates_are_each_placed_exactly_once(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    host = tmp_path / "four.xml"
    host.write_text(host_xml("iaas-test", devices=FOUR_GPUS))
    app = make_app(replace(config, libvirt_uri=f"test://{host}", **QUICK))
    admin = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    admin.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    admin.post("/v1/flavors", ONE_GPU)
    steps: Counter[str] = Counter()
    real_step, lock = app.runner.step, threading.Lock()

    def counted(task_id: str) -> float | None:  # the runner's step is the tests' seam
        with lock:
            steps[task_id] += 1
        return real_step(task_id)

    app.runner.step = counted
    server = LiveServer(app)
    try:
        replies = race(f"{server.url}/v1/vms", [
            {"name": f"vm-{index}", "image_name": "base", "flavor": "g.1",
             "wait_for_capacity": True} for index in range(20)])
    finally:
        server.stop()
    assert all(reply.status == 202 for reply in replies), [r.body for r in replies]
    vms = [reply.body for reply in replies]
    assert Counter(vm["status"] for vm in vms) == {"building": 4, "queued": 16}
    waiting = {vm["id"]: vm for vm in vms}
    while waiting:  # delete what runs, all at once: each delete frees a GPU for the next
        built = until(lambda: [vm for vm in waiting.values()
                               if status_of(admin, vm) == "running"], "a placed VM runs")
        with ThreadPoolExecutor(len(built)) as pool:
            deletes = list(pool.map(lambda vm: admin.delete(f"/v1/vms/{vm['id']}").body, built))
        for task in deletes:
            assert admin.wait_task(task["id"])["status"] == "succeeded"
        for vm in built:
            del waiting[vm["id"]]
    with app.db.read() as conn:
        creates = conn.execute("SELECT id, status, attempts FROM tasks WHERE action = 'create'"
                               ).fetchall()
    assert len(creates) == 20
    assert all((row["status"], row["attempts"]) == ("succeeded", 1) for row in creates)
    assert all(steps[row["id"]] == 1 for row in creates), steps  # each handed on once
    assert positions(admin) == []
