"""A create that fails at any step leaves no overlay and no domain; the VM and task say why."""
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.hypervisor.disks import CommandFailed, run_command
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

VM = {"name": "vm-fail", "cpu": 1, "ram": 256, "image_name": "base"}


class GatedQemuImg:
    """Runs qemu-img for real, but holds every `create` until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, argv: Sequence[str]) -> str:
        if argv[1] == "create":
            self.entered.release()
            assert self.gate.wait(30), "test never opened the gate"
        return run_command(argv)


def failing_qemu_img(argv: Sequence[str]) -> str:
    if argv[1] == "create":
        raise CommandFailed(argv, "qemu-img: injected failure: No space left on device")
    return run_command(argv)


class StartRefused(Hypervisor):
    """Our own libvirt module with its start step refusing, the way a host without resources does."""

    def start(self, uuid: str) -> None:
        raise HypervisorError("internal error: process exited while connecting to monitor")


def setup_image(config: Config, client: Client) -> None:
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201


def one_build_in_progress(make_app: AppFactory, config: Config
                          ) -> tuple[App, Client, GatedQemuImg, dict[str, Any]]:
    """An app with one build slot, taken by VM `first`, which is held inside qemu-img."""
    gated = GatedQemuImg()
    app = make_app(replace(config, max_builds=1), run=gated)
    client = Client(app)
    setup_image(config, client)
    first = client.post("/v1/vms", {**VM, "name": "first"}).body
    assert gated.entered.acquire(timeout=10)
    return app, client, gated, first


def create_and_fail(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    reply = client.post("/v1/vms", VM)
    assert reply.status == 202
    task = client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "failed"
    vm = client.get(f"/v1/vms/{reply.body['id']}").body
    return vm, task


def assert_no_leftovers(app: App, config: Config, vm_id: str) -> None:
    assert app.hypervisor.power_state(vm_id) == "missing"
    assert not (config.instances_dir / vm_id).exists()
    assert (config.images_dir / "base.qcow2").is_file()


@pytest.mark.parametrize("deps, code", [
    ({"run": failing_qemu_img}, "overlay_failed"),
    ({"open_libvirt": StartRefused}, "start_failed"),
])
def test_failed_step_is_undone(make_app: AppFactory, config: Config, deps: dict,
                               code: str) -> None:
    app = make_app(config, **deps)
    client = Client(app)
    setup_image(config, client)
    vm, task = create_and_fail(client)
    assert task["error"]["code"] == code
    assert vm["status"] == "error" and vm["error"]["code"] == code
    assert vm["error"]["message"]
    assert_no_leftovers(app, config, vm["id"])
    assert client.wait_task(client.delete(f"/v1/vms/{vm['id']}").body["id"])["status"] == "succeeded"


def test_define_rejected_by_libvirt_is_undone(make_app: AppFactory, config: Config) -> None:
    app, client, gated, first = one_build_in_progress(make_app, config)
    second = client.post("/v1/vms", VM).body
    assert client.get(f"/v1/tasks/{second['task']['id']}").body["status"] == "queued"
    # While the build waits its turn, something else takes the domain name on the host.
    app.hypervisor.define(f"<domain type='test'><name>iaas-{second['id']}</name>"
                          "<memory>131072</memory><os><type>hvm</type></os></domain>")
    gated.gate.set()
    assert client.wait_task(first["task"]["id"])["status"] == "succeeded"
    task = client.wait_task(second["task"]["id"])
    assert task["error"]["code"] == "define_failed"
    assert "already exists" in task["error"]["message"]
    assert not (config.instances_dir / second["id"]).exists()
    assert client.get(f"/v1/vms/{second['id']}").body["status"] == "error"


def test_builds_beyond_the_limit_wait_queued(make_app: AppFactory, config: Config) -> None:
    gated = GatedQemuImg()
    app = make_app(replace(config, max_builds=2), run=gated)
    client = Client(app)
    setup_image(config, client)
    vms = [client.post("/v1/vms", {**VM, "name": f"q-{index}"}).body for index in range(4)]
    assert all(vm["status"] == "building" for vm in vms)
    assert gated.entered.acquire(timeout=10) and gated.entered.acquire(timeout=10)
    statuses = [client.get(f"/v1/tasks/{vm['task']['id']}").body["status"] for vm in vms]
    assert statuses.count("running") == 2 and statuses.count("queued") == 2
    gated.gate.set()
    assert all(client.wait_task(vm["task"]["id"])["status"] == "succeeded" for vm in vms)


def test_delete_while_building_is_vm_busy(make_app: AppFactory, config: Config) -> None:
    _app, client, gated, first = one_build_in_progress(make_app, config)
    refused = client.delete(f"/v1/vms/{first['id']}")
    assert refused.status == 409 and refused.error_code == "vm_busy"
    assert refused.body["error"]["details"]["task_id"] == first["task"]["id"]
    assert client.get(f"/v1/vms/{first['id']}").body["actions"] == []
    gated.gate.set()
    assert client.wait_task(first["task"]["id"])["status"] == "succeeded"
    delete = client.delete(f"/v1/vms/{first['id']}")
    assert delete.status == 202
    assert client.wait_task(delete.body["id"])["status"] == "succeeded"


def test_restart_marks_interrupted_and_cleans_up(make_app: AppFactory, config: Config) -> None:
    gated = GatedQemuImg()
    crashed = make_app(config, run=gated)
    client = Client(crashed)
    setup_image(config, client)
    vm = client.post("/v1/vms", VM).body
    assert gated.entered.acquire(timeout=10)  # the build is half-way: its folder exists
    assert (config.instances_dir / vm["id"]).is_dir()
    restarted = Client(make_app(config))  # a new server process on the same database
    task = restarted.get(f"/v1/tasks/{vm['task']['id']}").body
    assert task["status"] == "failed" and task["error"]["code"] == "interrupted"
    shown = restarted.get(f"/v1/vms/{vm['id']}").body
    assert shown["status"] == "error" and shown["error"]["code"] == "interrupted"
    assert not (config.instances_dir / vm["id"]).exists()
    gated.gate.set()  # the old process's thread finishes without undoing the new verdict
    crashed.runner.shutdown()
    assert restarted.get(f"/v1/vms/{vm['id']}").body["status"] == "error"
