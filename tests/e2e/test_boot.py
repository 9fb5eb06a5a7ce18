"""A real guest: create it over HTTP, see it boot and get a lease, delete it, nothing left."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import (
    TINY_IMAGE_NAME,
    IsolatedNetwork,
    domain_exists,
    installation_of,
)
from src.app import App
from src.config import Config
from tests.e2e.conftest import register_tiny_image
from tests.e2e.http_client import HttpClient

BOOT_DEADLINE_S = 120
LEASE = re.compile(r"IAAS-DHCP-LEASE (\d+\.\d+\.\d+\.\d+)")
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
           "ml@workstation")
USER_DATA = "#!/bin/sh\necho from the user\n"  # delivered beside the platform's part, unread here


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for_console(log: Path, pattern: str, deadline: float) -> re.Match[str]:
    """Poll the serial console log until pattern appears; fail with its tail at the deadline."""
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(pattern, text)
        if found:
            return found
        assert time.monotonic() < deadline, f"{pattern!r} never appeared in {log}:\n{text[-2000:]}"
        time.sleep(0.5)


def check_domain(conn: libvirt.virConnect, vm: dict[str, Any], app: App, config: Config) -> None:
    """The libvirt domain is exactly the VM: same UUID, named iaas-<uuid> and titled with the
    VM's name, TCG, an overlay on our image."""
    domain = conn.lookupByUUIDString(vm["id"])
    assert domain.name() == f"iaas-{vm['id']}"
    assert domain.metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None) == vm["name"]
    assert installation_of(domain) == app.installation_id
    root = ET.fromstring(domain.XMLDesc(0))
    assert root.get("type") == "qemu"
    assert root.find(f"./devices/interface/source[@network='{config.network}']") is not None
    disk = root.find("./devices/disk[@device='disk']/source")
    assert disk is not None
    assert disk.get("file") == str(config.instances_dir / vm["id"] / "disk.qcow2")
    graphics = root.find("./devices/graphics[@type='vnc']")
    assert graphics is not None
    assert vm["console"]["vnc"] == f"127.0.0.1:{graphics.get('port')}"
    assert graphics.get("listen") == "127.0.0.1"
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", "-f", "qcow2", str(disk.get("file"))],
        capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(config.images_dir / "tiny-linux.qcow2")
    assert Path(info["backing-filename"]).is_absolute()
    assert info["backing-filename-format"] == "qcow2"


def test_tiny_guest_boots_and_is_deleted_without_trace(
        live_client: HttpClient, e2e_app: App, e2e_config: Config,
        system_conn: libvirt.virConnect, e2e_network: IsolatedNetwork) -> None:
    register_tiny_image(live_client)
    base = e2e_config.images_dir / "tiny-linux.qcow2"
    base_digest = sha256(base)
    name = f"e2e-{secrets.token_hex(4)}"

    reply = live_client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256,
                                         "image_name": TINY_IMAGE_NAME, "ssh_keys": [SSH_KEY],
                                         "user_data": USER_DATA})
    assert reply.status == 202, reply.body
    vm_id = reply.body["id"]
    assert reply.headers["Location"] == f"/v1/vms/{vm_id}"
    task = live_client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "succeeded", task["error"]

    vm = live_client.get(f"/v1/vms/{vm_id}").body
    assert (vm["status"], vm["power_state"]) == ("running", "running")
    assert int(vm["console"]["vnc"].rpartition(":")[2]) > 0
    check_domain(system_conn, vm, e2e_app, e2e_config)

    console = e2e_config.instances_dir / vm_id / "console.log"
    deadline = time.monotonic() + BOOT_DEADLINE_S
    wait_for_console(console, "IAAS-TINY-BOOT-OK", deadline)
    lease = wait_for_console(console, LEASE.pattern, deadline)
    assert ipaddress.ip_address(lease.group(1)) in e2e_network.subnet

    # The API shows the same: the console tail, and the address learned from the DHCP lease.
    tail = live_client.get(f"/v1/vms/{vm_id}/console?tail=200").body
    assert "IAAS-TINY-BOOT-OK" in tail
    # The guest read its NoCloud seed (a read-only virtio disk) the way cloud-init does.
    assert f"IAAS-SEED-HOSTNAME {name}\n" in tail
    assert f"IAAS-SEED-SSH-KEY {SSH_KEY}\n" in tail
    assert tail.count("IAAS-SEED-SSH-KEY") == 1
    while not live_client.get(f"/v1/vms/{vm_id}").body["ip_addresses"]:
        assert time.monotonic() < deadline, "the lease never reached ip_addresses"
        time.sleep(0.5)
    addresses = live_client.get(f"/v1/vms/{vm_id}").body["ip_addresses"]
    assert addresses == [{"address": lease.group(1), "family": "ipv4", "source": "dhcp"}]
    listed = live_client.get("/v1/vms").body["vms"]
    assert [vm["ip_addresses"] for vm in listed if vm["id"] == vm_id] == [addresses]
    stats = live_client.get(f"/v1/vms/{vm_id}/stats").body
    assert stats["cpu"]["time_ns"] > 0 and stats["memory"]["current_mib"] == 256
    assert [disk["name"] for disk in stats["disks"]] == ["vda", "vdb"]
    assert all(disk["read_bytes"] > 0 for disk in stats["disks"])  # vdb: the seed was read
    assert len(stats["nics"]) == 1 and stats["nics"][0]["tx_bytes"] > 0

    reply = live_client.delete(f"/v1/vms/{vm_id}")
    assert reply.status == 202, reply.body
    assert live_client.wait_task(reply.body["id"])["status"] == "succeeded"
    gone = live_client.get(f"/v1/vms/{vm_id}")
    assert gone.status == 404 and gone.error_code == "vm_not_found"
    assert not domain_exists(system_conn, vm_id)
    assert not (e2e_config.instances_dir / vm_id).exists()
    assert sha256(base) == base_digest
