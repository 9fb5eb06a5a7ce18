"""SR-IOV virtual functions of a GPU as partitions, on a test-driver host whose node devices
describe them (a physical function's virt_functions capability, each VF's phys_function):
`GET /v1/gpus` lists them as `{parent, kind: vf, profile, total, available}` beside mdev types,
a VF is never offered as a whole GPU, and the physical function held whole offers none. A
flavor with gpu_profile sriov_vf takes one VF: the ledger holds it by its own address, the
domain gets it as a PCI hostdev, and whole-GPU passthrough never takes its physical function
while a VM holds one of its VFs (nor a VF while the physical function is held whole)."""
from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.database import partitions as partition_dao
from src.hypervisor.disks import CommandFailed, run_command
from src.hypervisor.pci import parse_node_device
from tests.conftest import AppFactory
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import (
    ONE_GPU,
    create,
    running,
    status_of,
    until,
)
from tests.integration.test_gpu_partitions import partition_flavor, served_with
from tests.support import Client, host_xml


def _function(function: int, group: int, extra: str, parent: str = "computer") -> str:
    return f"""  <device>
    <name>pci_0000_3b_00_{function}</name>
    <parent>{parent}</parent>
    <capability type='pci'>
      <class>0x030200</class>
      <domain>0</domain><bus>59</bus><slot>0</slot><function>{function}</function>
      <product id='0x2330'>GH100 [H100 SXM5 80GB]</product>
      <vendor id='0x10de'>NVIDIA Corporation</vendor>
{extra}      <iommuGroup number='{group}'><address domain='0x0000' bus='0x3b' slot='0x00' function='0x{function:x}'/></iommuGroup>
      <numa node='0'/>
    </capability>
  </device>
"""


VFS = (4, 5, 6)
PHYSICAL = _function(0, 12, "      <capability type='virt_functions' maxCount='16'>\n" + "".join(
    f"        <address domain='0x0000' bus='0x3b' slot='0x00' function='0x{vf:x}'/>\n"
    for vf in VFS) + "      </capability>\n")
VIRTUAL = "".join(_function(vf, 40 + vf, "      <capability type='phys_function'>\n"
                            "        <address domain='0x0000' bus='0x3b' slot='0x00' "
                            "function='0x0'/>\n      </capability>\n", "pci_0000_3b_00_0")
                  for vf in VFS)


# A second GPU without VFs, for whole-GPU passthrough while the first one's VFs are in use.
PLAIN = _function(0, 13, "").replace("3b_00_0", "5e_00_0").replace(
    "<bus>59</bus>", "<bus>94</bus>").replace("bus='0x3b'", "bus='0x5e'")


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "vf-host.xml"
    path.write_text(host_xml("iaas-test", devices=PHYSICAL + VIRTUAL + PLAIN))
    return path


class QemuImg:
    """The command runner, with qemu-img's create failing while `failing` is set (a build that
    fails after the VF was given)."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(self, argv: Sequence[str]) -> str:
        if self.failing and argv[1] == "create":
            raise CommandFailed(argv, "qemu-img: injected failure: No space left on device")
        return run_command(argv)


@pytest.fixture
def qemu_img() -> QemuImg:
    return QemuImg()


@pytest.fixture
def app(make_app: AppFactory, config: Config, qemu_img: QemuImg) -> App:
    return make_app(config, run=qemu_img)


def test_node_device_xml_names_virtual_and_physical_functions() -> None:
    physical = parse_node_device(PHYSICAL.replace("  <device>", "<device>"))
    virtual = parse_node_device(_function(4, 44, "      <capability type='phys_function'>\n"
                                          "        <address domain='0x0000' bus='0x3b' "
                                          "slot='0x00' function='0x0'/>\n"
                                          "      </capability>\n"))
    assert physical is not None and virtual is not None
    assert physical.virt_functions == ("0000:3b:00.4", "0000:3b:00.5", "0000:3b:00.6")
    assert (physical.physical_function, virtual.physical_function) == (None, "0000:3b:00.0")
    assert virtual.virt_functions == ()


def test_gpus_lists_the_virtual_functions_as_one_partition_offer(client: Client) -> None:
    reply = client.post("/v1/gpus/refresh", None)
    assert reply.status == 200, reply.body
    shown = client.get("/v1/gpus").body
    assert [gpu["id"] for gpu in shown["gpus"]] == ["0000:3b:00.0", "0000:5e:00.0"]  # no VF
    assert shown["partitions"] == [{
        "host": "local", "parent": "0000:3b:00.0", "kind": "vf", "type": "sriov_vf",
        "profile": "sriov_vf", "name": "GH100 [H100 SXM5 80GB]", "total": 3, "available": 3,
        "available_instances": 3}]


@pytest.fixture
def admin(app: App) -> Iterator[HttpClient]:
    with served_with(app, (ONE_GPU, partition_flavor("vf.1", "sriov_vf")),
                     refresh_gpus=True) as client:
        yield client


def vfs_available(admin: HttpClient) -> int:
    (offer,) = admin.get("/v1/gpus").body["partitions"]
    available: int = offer["available"]
    return available


def vf_of(app: App, vm: dict[str, Any]) -> str:
    """The PCI address the VM's domain passes through (its one hostdev)."""
    root = ET.fromstring(app.hypervisor.domain_xml(vm["id"]))
    (hostdev,) = root.iterfind("devices/hostdev")
    assert hostdev.attrib == {"mode": "subsystem", "type": "pci", "managed": "yes"}
    address = hostdev.find("source/address")
    assert address is not None
    return "{:04x}:{:02x}:{:02x}.{:x}".format(*(int(address.get(part, ""), 16) for part in (
        "domain", "bus", "slot", "function")))


def ledger(app: App) -> dict[str, str | None]:
    with app.db.read() as conn:
        return {row[0]: row[1] for row in conn.execute(
            "SELECT vm_id, address FROM partition_allocations")}


def refused(admin: HttpClient, name: str, flavor: str) -> dict[str, Any]:
    reply = admin.post("/v1/vms", {"name": name, "image_name": "base", "flavor": flavor})
    assert reply.status == 409, reply.body
    assert reply.body["error"]["code"] == "insufficient_capacity"
    error: dict[str, Any] = reply.body["error"]
    return error


def names(admin: HttpClient) -> list[str]:
    return sorted(vm["name"] for vm in admin.get("/v1/vms").body["vms"])


def test_a_vf_flavor_takes_one_vf_each_and_shares_the_ledger_with_whole_gpus(
        app: App, admin: HttpClient) -> None:
    assert admin.get("/v1/flavors/vf.1/availability").body["available"] == 3
    first = running(admin, create(admin, "vf-1", "vf.1"))
    assert first["gpus"] == []  # no whole GPU
    assert vf_of(app, first) == "0000:3b:00.4"
    assert ledger(app) == {first["id"]: "0000:3b:00.4"}
    assert vfs_available(admin) == 2
    assert admin.get("/v1/flavors/vf.1/availability").body["available"] == 2
    second = running(admin, create(admin, "vf-2", "vf.1"))
    assert vf_of(app, second) == "0000:3b:00.5"  # the second VF, never the first again
    whole = running(admin, create(admin, "whole", "g.1"))
    assert whole["gpus"] == ["0000:5e:00.0"]  # never the physical function its VFs split
    refused(admin, "whole-2", "g.1")
    third = running(admin, create(admin, "vf-3", "vf.1"))
    assert vf_of(app, third) == "0000:3b:00.6" and vfs_available(admin) == 0
    assert "no host has a free GPU partition of profile 'sriov_vf'" in refused(
        admin, "vf-4", "vf.1")["message"]
    for vm in (first, second, third, whole):
        reply = admin.delete(f"/v1/vms/{vm['id']}")
        assert admin.wait_task(reply.body["id"])["status"] == "succeeded"
    assert ledger(app) == {} and vfs_available(admin) == 3
    held = running(admin, create(admin, "whole-3", "g.1"))
    assert held["gpus"] == ["0000:3b:00.0"]  # free of VFs, the physical function goes whole
    assert vfs_available(admin) == 0  # and offers no VF while it is held whole
    refused(admin, "vf-5", "vf.1")


def test_a_failed_build_gives_its_vf_back(app: App, admin: HttpClient,
                                          qemu_img: QemuImg) -> None:
    qemu_img.failing = True
    vm = create(admin, "vf-1", "vf.1")
    until(lambda: status_of(admin, vm) == "error", "the build failed")
    assert admin.get(f"/v1/vms/{vm['id']}").body["error"]["code"] == "overlay_failed"
    assert ledger(app) == {} and vfs_available(admin) == 3
    assert app.hypervisor.power_state(vm["id"]) == "missing"
    qemu_img.failing = False
    again = running(admin, create(admin, "vf-2", "vf.1"))
    assert vf_of(app, again) == "0000:3b:00.4"


def test_the_ledger_holds_one_vf_for_one_vm(app: App, admin: HttpClient) -> None:
    vm = running(admin, create(admin, "vf-1", "vf.1"))
    with app.db.write() as conn, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        partition_dao.allocate(conn, partition_dao.MdevRow(
            "00000000-0000-4000-8000-000000000009", "local", "0000:3b:00.0", "sriov_vf",
            vm["id"], "2026-01-01T00:00:00.000000Z", "0000:3b:00.4"))


def test_a_vm_on_a_vf_is_not_migrated(admin: HttpClient) -> None:
    """Its VF is a PCI function of its host: it cannot go with it, cold or live."""
    vm = running(admin, create(admin, "vf-1", "vf.1"))
    for live in (True, False):
        reply = admin.post(f"/v1/vms/{vm['id']}/migrate", {"live": live})
        assert (reply.status, reply.body["error"]["code"]) == (409, "vm_not_migratable")
        assert "GPU partition of its host (0000:3b:00.4)" in reply.body["error"]["message"]
