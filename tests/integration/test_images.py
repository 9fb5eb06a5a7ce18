"""Images: register only real, standalone files inside the images dir; unregister keeps the file."""
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from src.config import Config
from src.hypervisor.disks import run_command
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client


def register(client: Client, file: str, fmt: str = "qcow2", name: str = "img") -> Any:
    return client.post("/v1/images", {"name": name, "file": file, "format": fmt})


def test_register_list_show_delete(client: Client, config: Config) -> None:
    make_qcow2(config.images_dir / "disk.qcow2", "1G")
    reply = register(client, "disk.qcow2")
    assert reply.status == 201
    assert reply.headers["Location"] == f"/v1/images/{reply.body['id']}"
    assert reply.body["virtual_size_bytes"] == 1024 ** 3
    assert client.get("/v1/images").body["images"] == [reply.body]
    shown = {**reply.body, "hosts": []}  # admins see which hosts' pools hold a copy: none
    assert client.get("/v1/images/img").body == shown
    assert client.get(f"/v1/images/{reply.body['id']}").body == shown
    assert client.delete("/v1/images/img").status == 204
    assert client.get("/v1/images/img").status == 404
    assert (config.images_dir / "disk.qcow2").is_file(), "unregistering keeps the file"


def test_raw_image(client: Client, config: Config) -> None:
    (config.images_dir / "disk.raw").write_bytes(b"\0" * 1024 * 1024)
    reply = register(client, "disk.raw", "raw")
    assert reply.status == 201 and reply.body["format"] == "raw"


def test_duplicate_name_is_409(client: Client, config: Config) -> None:
    make_qcow2(config.images_dir / "disk.qcow2")
    assert register(client, "disk.qcow2").status == 201
    reply = register(client, "disk.qcow2")
    assert reply.status == 409 and reply.error_code == "name_conflict"


def _symlink_out(images: Path, tmp_path: Path) -> str:
    outside = make_qcow2(tmp_path / "outside.qcow2")
    os.symlink(outside, images / "link.qcow2")
    return "link.qcow2"


def _backed(images: Path, tmp_path: Path) -> str:
    base = make_qcow2(images / "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(images / "child.qcow2")], check=True)
    return "child.qcow2"


def _data_file(images: Path, tmp_path: Path) -> str:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={tmp_path / 'data.raw'}", str(images / "ext.qcow2"), "16M"],
                   check=True)
    return "ext.qcow2"


def _raw_declared_qcow2(images: Path, tmp_path: Path) -> str:
    (images / "plain.raw").write_bytes(b"\0" * 65536)
    return "plain.raw"


@pytest.mark.parametrize("make_file, fmt", [
    (lambda images, tmp: "absent.qcow2", "qcow2"),
    (_symlink_out, "qcow2"),
    (_backed, "qcow2"),
    (_data_file, "qcow2"),
    (_raw_declared_qcow2, "qcow2"),
    (lambda images, tmp: make_qcow2(images / "real.qcow2").name, "raw"),
])
def test_unusable_files_are_400(client: Client, config: Config, tmp_path: Path,
                                make_file: Any, fmt: str) -> None:
    file = make_file(config.images_dir, tmp_path)
    reply = register(client, file, fmt)
    assert reply.status == 400, reply.body
    assert reply.error_code == "image_file_invalid"
    assert client.get("/v1/images").body["images"] == []


@pytest.mark.parametrize("file", ["../etc/passwd", "/etc/passwd", "..", "sub/dir.qcow2", ".hidden"])
def test_paths_are_refused_by_the_schema(client: Client, file: str) -> None:
    reply = register(client, file)
    assert reply.status == 400 and reply.error_code == "validation_failed"
    assert reply.body["error"]["details"]["errors"][0]["field"] == "file"


def test_image_in_use_cannot_be_deleted(client: Client, base_image: dict) -> None:
    reply = client.post("/v1/vms", {"name": "user", "cpu": 1, "ram": 128, "image_name": "base"})
    client.wait_task(reply.body["task"]["id"])
    conflict = client.delete("/v1/images/base")
    assert conflict.status == 409 and conflict.error_code == "image_in_use"
    client.wait_task(client.delete("/v1/vms/user").body["id"])
    assert client.delete("/v1/images/base").status == 204


@pytest.mark.parametrize("swap", ["backing_file", "bigger", "raw_over_qcow2"])
def test_a_base_replaced_after_registration_fails_the_create(client: Client, app: Any,
                                                             config: Config, swap: str) -> None:
    base = make_qcow2(config.images_dir / "base.qcow2")
    assert register(client, "base.qcow2", name="base").status == 201
    base.unlink()
    if swap == "backing_file":  # the attack: a qcow2 whose backing file is a host secret
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow",
                        "-F", "raw", str(base), "64M"], check=True)
    elif swap == "bigger":
        make_qcow2(base, "2G")
    else:
        base.write_bytes(b"\0" * 1024 * 1024)
    reply = client.post("/v1/vms", {"name": "vm", "cpu": 1, "ram": 128, "image_name": "base"})
    assert reply.status == 409 and reply.error_code == "image_invalid", reply.body
    assert client.get("/v1/vms").body["vms"] == []
    assert app.hypervisor.power_states() == {}
    assert not config.instances_dir.exists() or not any(config.instances_dir.iterdir())


def test_a_registration_shows_the_sha256_and_checks_a_given_one(client: Client,
                                                                config: Config) -> None:
    import hashlib

    path = make_qcow2(config.images_dir / "disk.qcow2")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = client.post("/v1/images", {"name": "img", "file": "disk.qcow2", "format": "qcow2",
                                       "sha256": "f" * 64})
    assert wrong.status == 422 and wrong.error_code == "checksum_mismatch"
    reply = client.post("/v1/images", {"name": "img", "file": "disk.qcow2", "format": "qcow2",
                                       "sha256": digest})
    assert reply.status == 201 and reply.body["sha256"] == digest
    assert (reply.body["status"], reply.body["visibility"]) == ("active", "public")


def test_a_create_inspects_the_base_again_only_once_its_file_changed(
        make_app: AppFactory, config: Config) -> None:
    """qemu-img ran for every create (a process each, some 10 ms); the base is inspected again
    only once written or replaced, and one rewritten in place since is refused as before."""
    infos: list[Sequence[str]] = []

    def counted(argv: Sequence[str]) -> str:
        if argv[1] == "info":
            infos.append(argv)
        return run_command(argv)

    client = Client(make_app(config, run=counted))
    base = make_qcow2(config.images_dir / "base.qcow2")
    assert register(client, "base.qcow2", name="base").status == 201
    for name in ("first", "second"):
        reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 128, "image_name": "base"})
        assert reply.status == 202, reply.body
        assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    registered = len(infos)
    reply = client.post("/v1/vms", {"name": "third", "cpu": 1, "ram": 128, "image_name": "base"})
    assert reply.status == 202, reply.body
    assert len(infos) == registered, f"the unchanged base was inspected again: {infos}"
    client.wait_task(reply.body["task"]["id"])
    shadowed = config.images_dir.parent / "shadowed.qcow2"  # same inode, new bytes
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow",
                    "-F", "raw", str(shadowed), "64M"], check=True)
    with base.open("r+b") as rewritten:
        rewritten.write(shadowed.read_bytes())
        rewritten.truncate()
    reply = client.post("/v1/vms", {"name": "fourth", "cpu": 1, "ram": 128, "image_name": "base"})
    assert reply.status == 409 and reply.error_code == "image_invalid", reply.body
