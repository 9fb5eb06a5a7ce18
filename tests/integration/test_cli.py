"""Operator commands: db-init seeds the owner's image, db-clean and vm-cleanup touch only our things."""
import shutil
from pathlib import Path

import pytest

from src import cli
from src.app import App
from src.config import Config
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

OWNER_EXAMPLE = {"name": "vm-chulhee-01", "cpu": 2, "ram": 2048, "image_name": "Ubuntu-Base-22.04"}


def test_db_init_registers_the_owner_image_once(config: Config, make_app: AppFactory,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cli.db_init(config)
    cli.db_init(config)
    assert "already registered" in capsys.readouterr().out
    client = Client(make_app(config))
    images = client.get("/v1/images").body["images"]
    assert [(i["name"], i["file"], i["size_bytes"]) for i in images] == \
        [("Ubuntu-Base-22.04", "ubuntu-test.qcow2", None)]
    reply = client.post("/v1/vms", OWNER_EXAMPLE)
    assert reply.status == 409 and reply.error_code == "image_file_missing"
    make_qcow2(config.images_dir / "ubuntu-test.qcow2", "2G")
    reply = client.post("/v1/vms", OWNER_EXAMPLE)
    assert reply.status == 202 and reply.body["disk_gb"] == 2
    assert client.get("/v1/images/Ubuntu-Base-22.04").body["virtual_size_bytes"] == 2 * 1024 ** 3
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"


def test_install_image_copies_without_overwriting(config: Config, tmp_path: Path) -> None:
    source = make_qcow2(tmp_path / "tiny.qcow2")
    cli.install_image(config, "tiny", source)
    target = config.images_dir / "tiny.qcow2"
    assert target.read_bytes() == source.read_bytes()
    target.write_bytes(b"changed")
    cli.install_image(config, "tiny", source)
    assert target.read_bytes() == b"changed"


def test_db_clean_removes_rows_only(app: App, client: Client, config: Config,
                                    base_image: dict) -> None:
    vm = client.post("/v1/vms", {"name": "kept", "cpu": 1, "ram": 256, "image_name": "base"}).body
    client.wait_task(vm["task"]["id"])
    cli.db_clean(config)
    assert client.get("/v1/vms").body["vms"] == []
    assert app.hypervisor.power_state(vm["id"]) == "running"
    assert (config.instances_dir / vm["id"]).is_dir()


def _two_vms_and_foreign_things(app: App, client: Client, config: Config) -> tuple[list[str], str, list[Path]]:
    ours = []
    for name in ("ours-1", "ours-2"):
        vm = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256, "image_name": "base"}).body
        client.wait_task(vm["task"]["id"])
        ours.append(vm["id"])
    foreign_id = "0f0f0f0f-0000-4000-8000-000000000001"
    app.hypervisor.define(f"<domain type='test'><name>foreign</name><uuid>{foreign_id}</uuid>"
                          "<memory>131072</memory><os><type>hvm</type></os></domain>")
    foreign_folder = config.instances_dir / "not-ours"
    foreign_folder.mkdir()
    other_install = config.instances_dir / "other-installation"
    shutil.copytree(config.instances_dir / ours[0], other_install)
    (other_install / ".iaas-installation").write_text("another-installation-id\n")
    return ours, foreign_id, [foreign_folder, other_install]


def test_vm_cleanup_removes_orphans_only(app: App, client: Client, config: Config,
                                         base_image: dict) -> None:
    ours, foreign_id, foreign_folders = _two_vms_and_foreign_things(app, client, config)
    orphan, kept = ours
    with app.db.write() as conn:  # the row goes, the domain and folder stay: orphans
        conn.execute("DELETE FROM vms WHERE id = ?", (orphan,))
    listed = client.get("/v1/admin/orphans").body
    assert listed == {"domains": [{"uuid": orphan, "name": f"iaas-{orphan}", "host": "local"}],
                      "folders": [str(config.instances_dir / orphan)], "volumes": []}

    cli.vm_cleanup(config, app.hosts)

    assert app.hypervisor.power_state(orphan) == "missing"
    assert not (config.instances_dir / orphan).exists()
    assert app.hypervisor.power_state(kept) == "running"
    assert (config.instances_dir / kept).is_dir()
    assert [vm["id"] for vm in client.get("/v1/vms").body["vms"]] == [kept]
    assert client.get("/v1/admin/orphans").body == {"domains": [], "folders": [], "volumes": []}
    assert app.hypervisor.power_state(foreign_id) == "shutoff"
    assert all(folder.is_dir() for folder in foreign_folders)


def test_vm_cleanup_all_removes_every_vm_of_ours(app: App, client: Client, config: Config,
                                                 base_image: dict) -> None:
    ours, foreign_id, foreign_folders = _two_vms_and_foreign_things(app, client, config)

    cli.vm_cleanup(config, app.hosts, everything=True)

    assert all(app.hypervisor.power_state(vm_id) == "missing" for vm_id in ours)
    assert not any((config.instances_dir / vm_id).exists() for vm_id in ours)
    assert client.get("/v1/vms").body["vms"] == []
    assert app.hypervisor.power_state(foreign_id) == "shutoff"
    assert all(folder.is_dir() for folder in foreign_folders)
