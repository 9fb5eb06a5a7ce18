"""Names per project on qemu:///system: two projects' VMs of one name are two domains named
iaas-<uuid>, titled with the name, and `virsh list --title` shows them so."""
from __future__ import annotations

import secrets
import subprocess

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import SYSTEM_URI, TINY_IMAGE_NAME, domain_exists
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image
from tests.support import Client


def test_one_name_in_two_projects_is_two_titled_domains(make_e2e_app: E2eAppFactory,
                                                        e2e_config: Config,
                                                        system_conn: libvirt.virConnect) -> None:
    app = make_e2e_app(e2e_config)
    admin = Client(app)
    register_tiny_image(admin)
    name = f"e2e-{secrets.token_hex(4)}"
    ids = {}
    for project in ("e2e-alpha", "e2e-beta"):
        member = Client(app, token=app.tokens.issue(project, "member")[1])
        reply = member.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256,
                                        "image_name": TINY_IMAGE_NAME})
        assert reply.status == 202, reply.body
        assert member.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
        ids[project] = reply.body["id"]

    for vm_id in ids.values():
        domain = system_conn.lookupByUUIDString(vm_id)
        assert domain.name() == f"iaas-{vm_id}" and domain.isActive()
        assert domain.metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None) == name
    listing = subprocess.run(["virsh", "-c", SYSTEM_URI, "list", "--all", "--title"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    rows = [line.split() for line in listing.splitlines() if name in line]
    assert sorted(row[1] for row in rows) == sorted(f"iaas-{vm_id}" for vm_id in ids.values())
    assert all(row[-1] == name for row in rows)

    assert admin.get(f"/v1/vms/{name}").error_code == "ambiguous_name"
    for project, vm_id in ids.items():
        reply = admin.delete(f"/v1/vms/{name}?project={project}")
        assert reply.status == 202 and reply.body["vm_id"] == vm_id, reply.body
        assert admin.wait_task(reply.body["id"])["status"] == "succeeded"
        assert not domain_exists(system_conn, vm_id)
    assert admin.get(f"/v1/vms/{name}").error_code == "vm_not_found"
