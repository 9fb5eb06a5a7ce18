"""VMs on the libvirt test driver: create, show, list, delete, and what they leave behind."""
import json
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

from src.app import App
from src.config import Config
from src.hypervisor.domain_xml import METADATA_NS
from tests.support import Client

OWNER_EXAMPLE = {"name": "vm-chulhee-01", "cpu": 2, "ram": 2048, "image_name": "base"}


def create(client: Client, name: str, **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256, "image_name": "base", **extra})
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    body: dict[str, Any] = reply.body
    return body


def test_create_returns_building_vm_with_its_task(client: Client, base_image: dict) -> None:
    reply = client.post("/v1/vms", OWNER_EXAMPLE)
    assert reply.status == 202
    vm = reply.body
    assert reply.headers["Location"] == f"/v1/vms/{vm['id']}"
    assert vm["status"] == "building"
    assert vm["task"]["action"] == "create" and vm["task"]["vm_id"] == vm["id"]
    assert vm["image"] == {"id": base_image["id"], "name": "base"}
    assert vm["disk_gb"] == 1  # the 64 MiB base rounded up to whole GiB
    task = client.wait_task(vm["task"]["id"])
    assert task["status"] == "succeeded" and task["error"] is None
    assert task["started_at"] and task["finished_at"]
    shown = client.get(f"/v1/vms/{vm['id']}").body
    assert shown["status"] == "running" and shown["power_state"] == "running"
    assert shown["task"] is None and shown["error"] is None
    assert client.get("/v1/vms/vm-chulhee-01").body["id"] == vm["id"]


def test_domain_matches_the_vm(client: Client, app: App, config: Config, base_image: dict) -> None:
    vm = create(client, "vm-a", cpu=1, ram=384, disk_gb=3)
    root = ET.fromstring(app.hypervisor.domain_xml(vm["id"]))
    assert root.findtext("uuid") == vm["id"] and root.findtext("name") == f"iaas-{vm['id']}"
    assert root.findtext("title") == "vm-a"
    assert root.find("memory").text == str(384 * 1024)  # libvirt reports KiB
    ns = {"iaas": METADATA_NS}
    assert root.findtext("metadata/iaas:instance/iaas:installation", namespaces=ns) == \
        app.installation_id
    disk = root.find("devices/disk/source").get("file")
    assert disk == str(config.instances_dir / vm["id"] / "disk.qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", disk],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["backing-filename"] == str(config.images_dir / "base.qcow2")
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 3 * 1024 ** 3


def test_list_filters_and_pages(client: Client, base_image: dict) -> None:
    names = [f"vm-{index}" for index in range(5)]
    ids = [create(client, name)["id"] for name in names]
    listed = client.get("/v1/vms").body
    assert [vm["id"] for vm in listed["vms"]] == ids and "next_marker" not in listed
    assert all(vm["power_state"] == "running" for vm in listed["vms"])
    assert [vm["name"] for vm in client.get("/v1/vms?name=vm-3").body["vms"]] == ["vm-3"]
    assert len(client.get("/v1/vms?status=running").body["vms"]) == 5
    assert client.get("/v1/vms?status=error").body["vms"] == []
    first = client.get("/v1/vms?limit=2").body
    assert [vm["id"] for vm in first["vms"]] == ids[:2] and first["next_marker"] == ids[1]
    second = client.get(f"/v1/vms?limit=2&marker={first['next_marker']}").body
    assert [vm["id"] for vm in second["vms"]] == ids[2:4]
    last = client.get(f"/v1/vms?limit=2&marker={second['next_marker']}").body
    assert [vm["id"] for vm in last["vms"]] == ids[4:] and "next_marker" not in last


def test_bad_list_queries_are_400(client: Client) -> None:
    for query in ("limit=0", "limit=abc", "status=up", "marker=00000000-0000-4000-8000-000000000000",
                  "sort=name"):
        reply = client.get(f"/v1/vms?{query}")
        assert reply.status == 400, query


def test_list_uses_a_constant_number_of_libvirt_calls(client: Client, app: App,
                                                      base_image: dict) -> None:
    def calls_for_list() -> int:
        # The client runs the request on this thread: its own calls, not the reconciler's.
        before = app.hypervisor.thread_calls
        assert client.get("/v1/vms").status == 200
        return app.hypervisor.thread_calls - before

    create(client, "only-one")
    with_one = calls_for_list()
    for index in range(20):
        create(client, f"many-{index}")
    assert calls_for_list() == with_one == 1


def test_unknown_vm_is_404(client: Client) -> None:
    for call in (client.get, client.delete):
        reply = call("/v1/vms/nope")
        assert reply.status == 404 and reply.error_code == "vm_not_found"
    reply = client.get("/v1/tasks/nope")
    assert reply.status == 404 and reply.error_code == "task_not_found"
    assert client.get("/v1/tasks/nope?wait=61").status == 400


def test_delete_removes_domain_files_and_row(client: Client, app: App, config: Config,
                                            base_image: dict) -> None:
    vm = create(client, "doomed")
    folder = config.instances_dir / vm["id"]
    assert (folder / "disk.qcow2").is_file()
    reply = client.delete("/v1/vms/doomed")
    assert reply.status == 202 and reply.body["action"] == "delete"
    assert reply.headers["Location"] == f"/v1/tasks/{reply.body['id']}"
    assert client.wait_task(reply.body["id"])["status"] == "succeeded"
    assert client.get(f"/v1/vms/{vm['id']}").status == 404
    assert app.hypervisor.power_state(vm["id"]) == "missing"
    assert not folder.exists()
    assert (config.images_dir / "base.qcow2").is_file()
    assert client.get(f"/v1/tasks/{reply.body['id']}").body["status"] == "succeeded"


def test_second_delete_is_busy_or_gone(client: Client, app: App, base_image: dict) -> None:
    create(client, "twice")
    first = client.delete("/v1/vms/twice").body
    second = client.delete("/v1/vms/twice")
    assert (second.status, second.error_code) in ((409, "vm_busy"), (404, "vm_not_found"))
    client.wait_task(first["id"])


def test_a_domain_named_like_the_vm_outside_the_platform_is_no_conflict(
        client: Client, app: App, base_image: dict) -> None:
    """Domains are named iaas-<id>: another tool's domain called `taken` is not in the way."""
    foreign = "0f0f0f0f-0000-4000-8000-000000000002"
    app.hypervisor.define(f"<domain type='test'><name>taken</name><uuid>{foreign}</uuid>"
                          "<memory>131072</memory><os><type>hvm</type></os></domain>")
    vm = create(client, "taken")
    assert client.get(f"/v1/vms/{vm['id']}").body["status"] == "running"
    assert app.hypervisor.power_state(foreign) == "shutoff"  # left alone
    app.hypervisor.undefine(foreign)
