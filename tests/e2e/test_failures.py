"""Real failures and operator clean-up on qemu:///system: undo is complete, others are spared."""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import TINY_IMAGE_NAME, domain_exists
from src import cli
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image
from tests.support import Client

FOREIGN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
</domain>"""


def vm_body(name: str) -> dict[str, object]:
    return {"name": name, "cpu": 1, "ram": 256, "image_name": TINY_IMAGE_NAME}


@pytest.fixture
def foreign_domain(system_conn: libvirt.virConnect) -> Iterator[libvirt.virDomain]:
    """A domain someone else defined: no iaas metadata, never started."""
    domain = system_conn.defineXML(FOREIGN_XML.format(name=f"e2e-foreign-{secrets.token_hex(4)}",
                                                      uuid=uuid.uuid4()))
    uuid_string = domain.UUIDString()
    try:
        yield domain
    finally:
        if domain_exists(system_conn, uuid_string):
            system_conn.lookupByUUIDString(uuid_string).undefine()


def test_start_failure_is_undone(make_e2e_app: E2eAppFactory, e2e_config: Config,
                                 system_conn: libvirt.virConnect) -> None:
    config = replace(e2e_config, network=f"iaas-e2e-missing-{secrets.token_hex(4)}")
    client = Client(make_e2e_app(config))
    register_tiny_image(client)
    name = f"e2e-{secrets.token_hex(4)}"
    reply = client.post("/v1/vms", vm_body(name))
    assert reply.status == 202, reply.body
    task = client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "failed"
    assert task["error"]["code"] == "start_failed", task["error"]
    vm = client.get(f"/v1/vms/{reply.body['id']}").body
    assert vm["status"] == "error" and vm["error"]["code"] == "start_failed"
    assert vm["power_state"] == "missing"
    assert not domain_exists(system_conn, vm["id"])
    with pytest.raises(libvirt.libvirtError):
        system_conn.lookupByName(f"iaas-{vm['id']}")
    assert not (config.instances_dir / vm["id"]).exists()
    assert (config.images_dir / "tiny-linux.qcow2").is_file()


def make_foreign_folders(instances: Path) -> tuple[Path, Path]:
    """A folder without the owner marker, and one marked by another installation."""
    unmarked = instances / f"e2e-foreign-{secrets.token_hex(4)}"
    unmarked.mkdir()
    (unmarked / "disk.qcow2").write_bytes(b"not ours")
    other = instances / str(uuid.uuid4())
    other.mkdir()
    (other / ".iaas-installation").write_text("another-installation\n")
    return unmarked, other


def test_vm_cleanup_removes_orphans_then_all_of_ours_only(make_e2e_app: E2eAppFactory, e2e_config: Config,
                                      system_conn: libvirt.virConnect,
                                      foreign_domain: libvirt.virDomain) -> None:
    client = Client(make_e2e_app(e2e_config))
    register_tiny_image(client)
    ours = []
    for _ in range(3):
        reply = client.post("/v1/vms", vm_body(f"e2e-{secrets.token_hex(4)}"))
        assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
        ours.append(reply.body["id"])
    unmarked, other = make_foreign_folders(e2e_config.instances_dir)
    orphan = ours.pop()
    with client.app.db.write() as conn:  # a row lost (say, a restored DB backup): an orphan
        conn.execute("DELETE FROM vms WHERE id = ?", (orphan,))
    assert [d["uuid"] for d in client.get("/v1/admin/orphans").body["domains"]] == [orphan]

    cli.vm_cleanup(e2e_config)  # `make vm-cleanup`: the orphan only, on every host
    assert not domain_exists(system_conn, orphan)
    assert not (e2e_config.instances_dir / orphan).exists()
    assert all(domain_exists(system_conn, vm_id) for vm_id in ours)
    assert client.get("/v1/admin/orphans").body == {"domains": [], "folders": [], "volumes": []}
    cli.vm_cleanup(e2e_config, everything=True)  # `make vm-cleanup ALL=1`

    assert not any(domain_exists(system_conn, vm_id) for vm_id in ours)
    filters = set(system_conn.listNWFilters())  # nor their security groups' filters
    assert not {f"iaas-fw-{vm_id}" for vm_id in [*ours, orphan]} & filters
    assert not any((e2e_config.instances_dir / vm_id).exists() for vm_id in ours)
    assert client.get("/v1/vms").body["vms"] == []
    assert domain_exists(system_conn, foreign_domain.UUIDString())
    assert not foreign_domain.isActive()
    assert (unmarked / "disk.qcow2").read_bytes() == b"not ours"
    assert (other / ".iaas-installation").is_file()
    foreign_domain.undefine()
    for folder in (unmarked, other):
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
