"""Members read stable codes and our own words; host paths and libvirt URIs only reach admins."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from src.config import Config
from src.hypervisor.disks import CommandFailed, run_command
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


def test_libvirt_failures_answer_members_without_detail(make_app: AppFactory, config: Config,
                                                        tmp_path: Path) -> None:
    app = make_app(replace(config, libvirt_uri=f"test://{tmp_path}/gone.xml"))
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    Client(app).post("/v1/flavors", {"name": "f", "cpu": 1, "ram": 128, "disk_gb": 1})
    reply = member.get("/v1/flavors/f/availability")  # asks libvirt for the host's size
    assert reply.status == 503 and reply.error_code == "hypervisor_unavailable"
    assert "gone.xml" not in str(reply.body) and reply.body["error"]["details"] == {}
    admin = Client(app).get("/v1/flavors/f/availability")
    assert admin.status == 503 and "gone.xml" in admin.body["error"]["message"]
