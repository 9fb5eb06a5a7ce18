"""VM names are unique per project: a name says nothing about other projects, an admin's name
that several projects use is ambiguous until ?project= narrows it, domains are named iaas-<id>."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from src.api.routes import ROUTES
from src.app import App
from src.config import Config
from tests.support import Client, LiveServer, Reply, post

NAME = "payroll-db"
SPEC = {"cpu": 1, "ram": 128, "image_name": "base"}
# Every route of one VM, in an order in which each power action is allowed (delete last).
READ_OPERATIONS = ["showVm", "listVmEvents", "showVmConsole", "showVmStats"]
TASK_OPERATIONS = ["rebootVm", "pauseVm", "resumeVm", "stopVm", "startVm", "shutdownVm",
                   "deleteVm"]  # in an order that each succeeds on the VM the one before left
DISK_OPERATIONS = ["attachVolume", "detachVolume", "listVmSnapshots", "createVmSnapshot",
                   "deleteVmSnapshot", "revertVm", "createVmImage"]
SECURITY_OPERATIONS = ["attachSecurityGroup", "detachSecurityGroup"]
ADMIN_OPERATIONS = ["migrateVm"]  # members are refused these before any lookup
VM_OPERATIONS = (READ_OPERATIONS + TASK_OPERATIONS + DISK_OPERATIONS + SECURITY_OPERATIONS
                 + ADMIN_OPERATIONS)
# Valid bodies, so that what answers is the VM's lookup, not the body's check.
BODIES = {"attachVolume": {"volume": "data"}, "createVmSnapshot": {"name": "s1"},
          "revertVm": {"snapshot": "s1"}, "createVmImage": {"name": "img"},
          "attachSecurityGroup": {"name": "default"}}


class Projects:
    """Members of alpha, beta and gamma, and an admin; alpha and beta each run a payroll-db."""

    def __init__(self, app: App) -> None:
        self.admin = Client(app)
        self.alpha, self.beta, self.gamma = (
            Client(app, token=app.tokens.issue(project, "member")[1])
            for project in ("alpha", "beta", "gamma"))
        self.ids = {"alpha": create(self.alpha, NAME)["id"], "beta": create(self.beta, NAME)["id"]}


def create(client: Client, name: str) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, **SPEC})
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    body: dict[str, Any] = reply.body
    return body


@pytest.fixture
def projects(app: App, base_image: dict) -> Projects:
    return Projects(app)


def vm_routes() -> dict[str, tuple[str, str]]:
    """operationId -> (method, path template) of every route about one VM."""
    return {route.operation_id: (route.method, route.pattern)
            for route in ROUTES if "{vm}" in route.pattern}


def call(client: Client, operation: str, vm: str, query: str = "") -> Reply:
    method, pattern = vm_routes()[operation]
    path = (pattern.replace("{vm}", vm).replace("{volume}", "data")
            .replace("{snapshot}", "s1").replace("{group}", "default") + query)
    if method == "POST":
        return client.post(path, BODIES.get(operation))
    return client.request(method, path)


def test_the_test_covers_every_vm_route() -> None:
    assert sorted(vm_routes()) == sorted(VM_OPERATIONS)


def test_two_projects_each_have_the_name_and_own_domains(app: App, projects: Projects) -> None:
    alpha, beta = projects.ids["alpha"], projects.ids["beta"]
    assert alpha != beta
    for vm_id in (alpha, beta):
        root = ET.fromstring(app.hypervisor.domain_xml(vm_id))
        assert root.findtext("name") == f"iaas-{vm_id}"  # the domain's name is the id's
        assert root.findtext("uuid") == vm_id
        assert root.findtext("title") == NAME  # operators still read the VM's name
        assert app.hypervisor.power_state(vm_id) == "running"
    with app.db.read() as conn:
        recorded = dict(conn.execute("SELECT id, domain_name FROM vms").fetchall())
    assert recorded == {alpha: f"iaas-{alpha}", beta: f"iaas-{beta}"}
    clash = projects.alpha.post("/v1/vms", {"name": NAME, **SPEC})  # within one project: taken
    assert clash.status == 409 and clash.error_code == "name_conflict"
    assert beta not in str(clash.body) and "beta" not in str(clash.body)


def test_a_third_projects_create_is_not_told_the_name_exists_elsewhere(
        projects: Projects) -> None:
    used_elsewhere = projects.gamma.post("/v1/vms", {"name": NAME, **SPEC})
    unused = projects.gamma.post("/v1/vms", {"name": "never-used", **SPEC})
    assert used_elsewhere.status == unused.status == 202
    assert sorted(used_elsewhere.body) == sorted(unused.body)
    assert used_elsewhere.body["project"] == "gamma"
    for vm_id in projects.ids.values():
        assert vm_id not in str(used_elsewhere.body)
    projects.gamma.wait_task(used_elsewhere.body["task"]["id"])
    projects.gamma.wait_task(unused.body["task"]["id"])


def test_a_member_finds_its_own_vm_by_name(projects: Projects) -> None:
    for project, client in (("alpha", projects.alpha), ("beta", projects.beta)):
        mine = projects.ids[project]
        assert client.get(f"/v1/vms/{NAME}").body["id"] == mine
        assert client.get(f"/v1/vms/{NAME}?project={project}").body["id"] == mine
        assert client.get(f"/v1/vms/{NAME}/stats").body["vm_id"] == mine
    assert projects.gamma.get(f"/v1/vms/{NAME}").error_code == "vm_not_found"


def test_a_member_naming_another_project_finds_nothing_on_every_route(
        projects: Projects) -> None:
    beta = projects.ids["beta"]
    for operation in VM_OPERATIONS:
        for vm in (NAME, beta, projects.ids["alpha"]):
            reply = call(projects.alpha, operation, vm, "?project=beta")
            expected = (403, "forbidden") if operation in ADMIN_OPERATIONS else (
                404, "vm_not_found")
            assert (reply.status, reply.error_code) == expected, (operation, vm)
    shown = projects.beta.get(f"/v1/vms/{beta}").body
    assert shown["status"] == "running" and shown["task"] is None  # nothing was done to it


def test_an_admins_ambiguous_name_is_409_with_the_ids_on_every_route(
        app: App, projects: Projects) -> None:
    ids = [projects.ids["alpha"], projects.ids["beta"]]
    for operation in VM_OPERATIONS:
        reply = call(projects.admin, operation, NAME)
        assert (reply.status, reply.error_code) == (409, "ambiguous_name"), operation
        assert reply.body["error"]["details"]["ids"] == ids
        assert reply.body["error"]["details"]["name"] == NAME
        gone = call(projects.admin, operation, NAME, "?project=gamma")
        assert (gone.status, gone.error_code) == (404, "vm_not_found"), operation
    for vm_id in ids:  # nothing was done to either
        assert app.hypervisor.power_state(vm_id) == "running"
        events = projects.admin.get(f"/v1/vms/{vm_id}/events").body["events"]
        assert [event["action"] for event in events] == ["create"]
    single = create(projects.gamma, "only-one")
    assert projects.admin.get("/v1/vms/only-one").body["id"] == single["id"]


def test_project_narrows_an_admins_lookup_on_every_route(app: App, config: Config,
                                                          projects: Projects) -> None:
    alpha, beta = projects.ids["alpha"], projects.ids["beta"]
    for project, vm_id in projects.ids.items():
        (config.instances_dir / vm_id / "console.log").write_text(f"console of {project}\n")
    admin, query = projects.admin, "?project=beta"
    assert call(admin, "showVm", NAME, query).body["id"] == beta
    assert call(admin, "listVmEvents", NAME, query).body == \
        admin.get(f"/v1/vms/{beta}/events").body
    assert call(admin, "showVmConsole", NAME, query).body == "console of beta\n"
    assert call(admin, "showVmStats", NAME, query).body["vm_id"] == beta
    for operation in TASK_OPERATIONS:
        reply = call(admin, operation, NAME, query)
        assert reply.status == 202 and reply.body["vm_id"] == beta, (operation, reply.body)
        assert admin.wait_task(reply.body["id"])["status"] == "succeeded", operation
    assert app.hypervisor.power_state(beta) == "missing"
    assert admin.get(f"/v1/vms/{NAME}").body["id"] == alpha  # no longer ambiguous
    assert call(admin, "showVm", alpha, query).error_code == "vm_not_found"  # ids narrow too
    assert app.hypervisor.power_state(alpha) == "running"


def test_an_idempotency_key_replays_only_the_same_project(app: App, projects: Projects) -> None:
    headers = {"Authorization": f"Bearer {projects.admin.token}", "Idempotency-Key": "stop-it"}
    server = LiveServer(app)
    try:
        stop = server.url + f"/v1/vms/{NAME}/stop"
        first = post(stop + "?project=alpha", {}, headers)
        assert first.status == 202 and first.body["vm_id"] == projects.ids["alpha"]
        projects.admin.wait_task(first.body["id"])
        assert post(stop + "?project=alpha", {}, headers).body == first.body  # a replay
        other = post(stop + "?project=beta", {}, headers)
    finally:
        server.stop()
    assert (other.status, other.error_code) == (422, "idempotency_key_reused")
    assert app.hypervisor.power_state(projects.ids["beta"]) == "running"
