"""SR-IOV virtual functions of a GPU as partitions, on a test-driver host whose node devices
describe them (a physical function's virt_functions capability, each VF's phys_function):
`GET /v1/gpus` lists them as `{parent, kind: vf, profile, total, available}` beside mdev types,
a VF is never offered as a whole GPU, and the physical function held whole offers none."""
from __future__ import annotations

from pathlib import Path

import pytest

from src.hypervisor.pci import parse_node_device
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


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "vf-host.xml"
    path.write_text(host_xml("iaas-test", devices=PHYSICAL + VIRTUAL))
    return path


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
    assert [gpu["id"] for gpu in shown["gpus"]] == ["0000:3b:00.0"]  # no VF as a whole GPU
    assert shown["partitions"] == [{
        "host": "local", "parent": "0000:3b:00.0", "kind": "vf", "type": "sriov_vf",
        "profile": "sriov_vf", "name": "GH100 [H100 SXM5 80GB]", "total": 3, "available": 3,
        "available_instances": 3}]


def test_a_flavor_cannot_take_a_virtual_function_yet(client: Client) -> None:
    """Listed, not scheduled: a VM is never handed a VF (only mdevs are made for VMs)."""
    client.post("/v1/gpus/refresh", None)
    made = client.post("/v1/flavors", {"name": "vf.1", "cpu": 1, "ram": 256, "disk_gb": 1,
                                       "gpu_profile": "sriov_vf"})
    assert made.status == 201, made.body
    available = client.get("/v1/flavors/vf.1/availability").body
    assert available["available"] == 0
