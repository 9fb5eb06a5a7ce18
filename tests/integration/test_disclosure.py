"""Members read stable codes and our own words; host paths and libvirt URIs only reach admins."""
from __future__ import annotations

from collections.abc import Sequence

from src.config import Config
from src.hypervisor.disks import CommandFailed, run_command
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

SECRET_PATH = "/var/lib/libvirt/images/iaas-instances/secret-folder/disk.qcow2"


def leaky_qemu_img(argv: Sequence[str]) -> str:
    if list(argv[:2]) == ["qemu-img", "create"]:
        raise CommandFailed(argv, f"qemu-img: {SECRET_PATH}: Could not create: Permission denied")
    return run_command(argv)


def test_task_and_vm_errors_hide_host_paths_from_members(make_app: AppFactory,
                                                         config: Config) -> None:
    app = make_app(config, run=leaky_qemu_img)
    admin = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    admin.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    vm = member.post("/v1/vms", {"name": "leak", "cpu": 1, "ram": 128, "image_name": "base"}).body
    task = member.wait_task(vm["task"]["id"])
    assert task["error"]["code"] == "overlay_failed"
    assert SECRET_PATH not in task["error"]["message"]
    assert "Permission denied" in task["error"]["message"]  # the rest of the words stay
    shown = member.get(f"/v1/vms/{vm['id']}").body["error"]
    events = member.get(f"/v1/vms/{vm['id']}/events").body["events"]
    assert SECRET_PATH not in str(shown) + str(events)
    assert SECRET_PATH in admin.get(f"/v1/tasks/{task['id']}").body["error"]["message"]
    assert SECRET_PATH in admin.get(f"/v1/vms/{vm['id']}").body["error"]["message"]


class StatsRefused(Hypervisor):
    """Our own libvirt layer with its stats call refused, in words that name host paths."""

    def stats(self, uuid: str) -> dict[str, object]:
        raise HypervisorError(f"Unable to read {SECRET_PATH}: Input/output error")


def test_libvirt_failures_answer_members_without_detail(make_app: AppFactory,
                                                        config: Config) -> None:
    app = make_app(config, open_libvirt=StatsRefused)
    admin = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    admin.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    vm = member.post("/v1/vms", {"name": "io", "cpu": 1, "ram": 128, "image_name": "base"}).body
    member.wait_task(vm["task"]["id"])
    reply = member.get(f"/v1/vms/{vm['id']}/stats")
    assert reply.status == 503 and reply.error_code == "hypervisor_unavailable"
    assert SECRET_PATH not in str(reply.body) and reply.body["error"]["details"] == {}
    shown = admin.get(f"/v1/vms/{vm['id']}/stats")
    assert shown.status == 503 and SECRET_PATH in shown.body["error"]["message"]
