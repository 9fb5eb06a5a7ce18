"""GPU inventory, exclusive allocation and capacity on a test-driver host with 2 NUMA nodes and
5 GPUs: 4 assignable, one stuck in an IOMMU group it shares with a NIC."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from tests.conftest import AppFactory
from tests.integration.test_vm_failures import failing_qemu_img
from tests.support import Client, LiveServer, host_xml, race


def _pci(address: str, class_code: str, numa: int, group: int, members: list[str],
         vendor: tuple[str, str] = ("0x10de", "NVIDIA Corporation"),
         product: tuple[str, str] = ("0x2330", "GH100 [H100 SXM5 80GB]")) -> str:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    addresses = "".join(
        f"<address domain='0x{m[0:4]}' bus='0x{m[5:7]}' slot='0x{m[8:10]}' function='0x{m[11]}'/>"
        for m in members)
    return f"""  <device>
    <name>pci_{address.replace(':', '_').replace('.', '_')}</name>
    <parent>computer</parent>
    <capability type='pci'>
      <class>{class_code}</class>
      <domain>{int(domain, 16)}</domain><bus>{int(bus, 16)}</bus>
      <slot>{int(slot, 16)}</slot><function>{int(function, 16)}</function>
      <product id='{product[0]}'>{product[1]}</product>
      <vendor id='{vendor[0]}'>{vendor[1]}</vendor>
      <iommuGroup number='{group}'>{addresses}</iommuGroup>
      <numa node='{numa}'/>
    </capability>
  </device>
"""


A100 = ("0x20b2", "GA100 [A100 SXM4 80GB]")
AUDIO = ("0x22a3", "High Definition Audio Controller")
# Node 0: two H100s (the first with its audio function). Node 1: an A100 behind a PCI bridge,
# another A100, and a fifth GPU whose group also holds a NIC of another slot: not assignable.
DEVICES = "".join([
    _pci("0000:3b:00.0", "0x030200", 0, 12, ["0000:3b:00.0", "0000:3b:00.1"]),
    _pci("0000:3b:00.1", "0x040300", 0, 12, ["0000:3b:00.0", "0000:3b:00.1"], product=AUDIO),
    _pci("0000:5e:00.0", "0x030200", 0, 13, ["0000:5e:00.0"]),
    _pci("0000:85:00.0", "0x060400", 1, 14, ["0000:85:00.0", "0000:86:00.0"],
         vendor=("0x1000", "Broadcom / LSI"), product=("0xc010", "PEX880xx PCIe Gen 4 Switch")),
    _pci("0000:86:00.0", "0x030200", 1, 14, ["0000:85:00.0", "0000:86:00.0"], product=A100),
    _pci("0000:af:00.0", "0x030000", 1, 15, ["0000:af:00.0"], product=A100),
    _pci("0000:d8:00.0", "0x030200", 1, 16, ["0000:d8:00.0", "0000:d9:00.0"]),
    _pci("0000:d9:00.0", "0x020000", 1, 16, ["0000:d8:00.0", "0000:d9:00.0"],
         vendor=("0x15b3", "Mellanox Technologies"), product=("0x101b", "MT28908 [ConnectX-6]")),
])
ASSIGNABLE = ["0000:3b:00.0", "0000:5e:00.0", "0000:86:00.0", "0000:af:00.0"]
ONE_GPU = {"name": "g.1", "cpu": 2, "ram": 1024, "disk_gb": 1, "gpu_count": 1,
           "numa_aligned": True, "cpu_pinning": True}
TWO_H100 = {"name": "g.h100x2", "cpu": 4, "ram": 2048, "disk_gb": 1, "gpu_count": 2,
            "gpu_model": "h100", "numa_aligned": True, "hugepages": True}


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-host.xml"
    path.write_text(host_xml("iaas-test", cpus=16, memory_gib=64, numa_nodes=2, devices=DEVICES))
    return path


def gpus(client: Client) -> dict[str, dict[str, Any]]:
    reply = client.get("/v1/gpus")
    assert reply.status == 200
    return {gpu["id"]: gpu for gpu in reply.body["gpus"]}


def availability(client: Client, flavor: str) -> tuple[int, str]:
    reply = client.get(f"/v1/flavors/{flavor}/availability")
    assert reply.status == 200, reply.body
    return reply.body["available"], reply.body["limited_by"]


def create(client: Client, name: str, flavor: str) -> Any:
    return client.post("/v1/vms", {"name": name, "image_name": "base", "flavor": flavor})


def test_inventory_matches_the_host(client: Client) -> None:
    found = gpus(client)
    assert sorted(found) == sorted([*ASSIGNABLE, "0000:d8:00.0"])
    assert [g for g in found if found[g]["status"] == "free"] == ASSIGNABLE
    stuck = found["0000:d8:00.0"]
    assert (stuck["status"], stuck["reason"]) == ("unavailable", "iommu_group_shared")
    assert stuck["iommu_group_devices"] == [
        {"address": "0000:d9:00.0", "class": "0x020000", "role": "foreign"}]
    h100 = found["0000:3b:00.0"]
    assert h100["passthrough_functions"] == ["0000:3b:00.0", "0000:3b:00.1"]
    assert h100["iommu_group_devices"][0]["role"] == "companion"
    assert (h100["vendor"], h100["product"]["id"]) == (
        {"id": "0x10de", "name": "NVIDIA Corporation"}, "0x2330")
    assert (h100["numa_node"], h100["iommu_group"], h100["vm_id"]) == (0, 12, None)
    behind_bridge = found["0000:86:00.0"]
    assert behind_bridge["iommu_group_devices"][0]["role"] == "bridge"
    assert behind_bridge["passthrough_functions"] == ["0000:86:00.0"]  # bridges stay home
    assert found["0000:af:00.0"]["numa_node"] == 1


def test_eight_racing_creates_get_four_gpus_never_one_twice(app: App, client: Client,
                                                            base_image: dict) -> None:
    client.post("/v1/flavors", ONE_GPU)
    assert availability(client, "g.1") == (4, "gpu")
    server = LiveServer(app)
    try:
        replies = race(f"{server.url}/v1/vms", [
            {"name": f"gpu-{index}", "image_name": "base", "flavor": "g.1"} for index in range(8)])
    finally:
        server.stop()
    accepted = [reply.body for reply in replies if reply.status == 202]
    refused = [reply.body for reply in replies if reply.status == 409]
    assert (len(accepted), len(refused)) == (4, 4), [r.body for r in replies]
    for body in refused:
        assert body["error"]["code"] == "insufficient_capacity"
        assert body["error"]["details"] == {"resource": "gpu", "requested": 1, "available": 0,
                                            "hosts": {"gpu": 1}}
    held = [gpu for vm in accepted for gpu in vm["gpus"]]
    assert sorted(held) == ASSIGNABLE  # each card once
    for vm in accepted:
        assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    ledger = gpus(client)
    assert {ledger[g]["vm_id"] for g in ASSIGNABLE} == {vm["id"] for vm in accepted}
    assert availability(client, "g.1") == (0, "gpu")
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM vms").fetchone()[0] == 4


def test_gpu_vm_xml_passes_the_whole_group_numa_local(app: App, client: Client,
                                                      base_image: dict) -> None:
    client.post("/v1/flavors", ONE_GPU)
    vm = create(client, "local", "g.1").body
    client.wait_task(vm["task"]["id"])
    assert (vm["gpus"], vm["numa_node"], vm["pinned_cpus"]) == (["0000:3b:00.0"], 0, [0, 1])
    domain = ET.fromstring(app.hypervisor.domain_xml(vm["id"]))
    sources = [(a.get("bus"), a.get("slot"), a.get("function"))
               for a in domain.iterfind("./devices/hostdev/source/address")]
    assert sources == [("0x3b", "0x00", "0x0"), ("0x3b", "0x00", "0x1")]
    assert domain.find("./os/type").get("machine").startswith("pc-q35") or \
        domain.find("./os/type").get("machine") == "q35"
    assert domain.find("./numatune/memory").get("nodeset") == "0"
    assert [p.get("cpuset") for p in domain.iterfind("./cputune/vcpupin")] == ["0", "1"]
    second = create(client, "local-2", "g.1").body
    # Packed onto the node that is already in use, pinned to CPUs nobody else holds.
    assert (second["gpus"], second["numa_node"], second["pinned_cpus"]) == (
        ["0000:5e:00.0"], 0, [2, 3])


def test_delete_frees_and_stop_start_keeps_the_same_gpus(client: Client, base_image: dict) -> None:
    client.post("/v1/flavors", ONE_GPU)
    vms = [create(client, f"keep-{index}", "g.1").body for index in range(4)]
    for vm in vms:
        client.wait_task(vm["task"]["id"])
    assert create(client, "fifth", "g.1").error_code == "insufficient_capacity"
    kept = vms[1]
    stop = client.post(f"/v1/vms/{kept['id']}/stop", None).body
    assert client.wait_task(stop["id"])["status"] == "succeeded"
    assert gpus(client)[kept["gpus"][0]]["vm_id"] == kept["id"]  # held while stopped
    assert availability(client, "g.1") == (0, "gpu")
    start = client.post(f"/v1/vms/{kept['id']}/start", None).body
    assert client.wait_task(start["id"])["status"] == "succeeded"
    assert client.get(f"/v1/vms/{kept['id']}").body["gpus"] == kept["gpus"]
    gone = vms[2]
    assert client.wait_task(client.delete(f"/v1/vms/{gone['id']}").body["id"])["status"] == "succeeded"
    freed = gpus(client)[gone["gpus"][0]]
    assert (freed["status"], freed["vm_id"]) == ("free", None)
    assert availability(client, "g.1") == (1, "gpu")
    again = create(client, "again", "g.1").body
    assert again["gpus"] == gone["gpus"]


def test_model_and_numa_alignment_limit_multi_gpu_flavors(client: Client,
                                                          base_image: dict) -> None:
    client.post("/v1/flavors", TWO_H100)
    client.post("/v1/flavors", {**TWO_H100, "name": "g.a100x2", "gpu_model": "A100"})
    anyx3 = {key: value for key, value in TWO_H100.items() if key != "gpu_model"}
    client.post("/v1/flavors", {**anyx3, "name": "g.anyx3", "gpu_count": 3})
    assert availability(client, "g.h100x2") == (1, "gpu")  # both H100s sit on node 0
    assert availability(client, "g.a100x2") == (1, "gpu")  # both A100s on node 1
    assert availability(client, "g.anyx3") == (0, "gpu")  # no node has three
    refused = create(client, "three", "g.anyx3")
    assert refused.status == 409
    assert refused.body["error"]["details"] == {"resource": "gpu", "requested": 3, "available": 2,
                                                "hosts": {"gpu": 1}}
    vm = create(client, "pair", "g.h100x2").body
    assert (vm["gpus"], vm["numa_node"]) == (["0000:3b:00.0", "0000:5e:00.0"], 0)
    assert availability(client, "g.h100x2") == (0, "gpu")
    assert availability(client, "g.a100x2") == (1, "gpu")


def test_vcpu_and_ram_are_checked_at_request_time(client: Client, base_image: dict) -> None:
    # 16 CPUs x 4.0 = 64 vCPUs, 64 GiB x 1.0 of RAM.
    client.post("/v1/flavors", {"name": "c.16", "cpu": 16, "ram": 1024, "disk_gb": 1})
    client.post("/v1/flavors", {"name": "m.16g", "cpu": 1, "ram": 16384, "disk_gb": 1})
    assert availability(client, "c.16") == (4, "vcpu")
    assert availability(client, "m.16g") == (4, "ram")
    body = {"image_name": "base", "cpu": 60, "ram": 1024}
    assert client.post("/v1/vms", {**body, "name": "big"}).status == 202
    refused = client.post("/v1/vms", {**body, "name": "bigger", "cpu": 5})
    assert refused.status == 409
    assert refused.body["error"]["details"] == {"resource": "vcpu", "requested": 5, "available": 4,
                                                "hosts": {"vcpu": 1}}
    refused = client.post("/v1/vms", {**body, "name": "fat", "cpu": 1, "ram": 64 * 1024})
    assert refused.body["error"]["details"] == {"resource": "ram", "requested": 65536,
                                                "available": 63 * 1024, "hosts": {"ram": 1}}
    assert availability(client, "c.16") == (0, "vcpu")
    assert [vm["name"] for vm in client.get("/v1/vms").body["vms"]] == ["big"]


def test_ratios_come_from_the_config(make_app: AppFactory, config: Config,
                                     base_image: dict) -> None:
    app = make_app(replace(config, cpu_allocation_ratio=1.0, db_path=config.db_path))
    client = Client(app)
    client.post("/v1/flavors", {"name": "c.4", "cpu": 4, "ram": 128, "disk_gb": 1})
    assert availability(client, "c.4") == (4, "vcpu")


def test_a_failed_build_gives_its_gpus_back(make_app: AppFactory, config: Config,
                                            base_image: dict) -> None:
    client = Client(make_app(config, run=failing_qemu_img))
    client.post("/v1/flavors", ONE_GPU)
    vm = create(client, "doomed", "g.1").body
    assert vm["gpus"] == ["0000:3b:00.0"]
    assert client.wait_task(vm["task"]["id"])["status"] == "failed"
    shown = client.get("/v1/vms/doomed").body
    assert shown["status"] == "error" and shown["gpus"] == [] and shown["pinned_cpus"] == []
    assert gpus(client)["0000:3b:00.0"]["status"] == "free"
    assert availability(client, "g.1") == (4, "gpu")


def test_refresh_keeps_allocations(app: App, client: Client, base_image: dict) -> None:
    client.post("/v1/flavors", ONE_GPU)
    vm = create(client, "held", "g.1").body
    reply = client.post("/v1/gpus/refresh", None)
    assert reply.status == 200
    after = {gpu["id"]: gpu for gpu in reply.body["gpus"]}
    assert after[vm["gpus"][0]]["vm_id"] == vm["id"]
    assert len(after) == 5


class UndefineFailsOnce(Hypervisor):
    """Our libvirt module with start refused and the first undefine failing: a build whose undo
    cannot remove its domain."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.undefine_failures = 1

    def start(self, uuid: str) -> None:
        raise HypervisorError("internal error: qemu unexpectedly closed the monitor")

    def undefine(self, uuid: str) -> None:
        if self.undefine_failures:
            self.undefine_failures -= 1
            raise HypervisorError("cannot undefine: the daemon went away")
        super().undefine(uuid)


def test_gpus_stay_held_while_a_failed_build_leaves_its_domain(
        make_app: AppFactory, config: Config, base_image: dict) -> None:
    app = make_app(config, open_libvirt=UndefineFailsOnce)
    client = Client(app)
    client.post("/v1/flavors", ONE_GPU)
    vm = create(client, "stuck", "g.1").body
    assert client.wait_task(vm["task"]["id"])["status"] == "failed"
    shown = client.get("/v1/vms/stuck").body
    assert shown["status"] == "error" and "keeps its resources" in shown["error"]["message"]
    assert shown["power_state"] != "missing" and shown["gpus"] == vm["gpus"]
    assert gpus(client)[vm["gpus"][0]]["vm_id"] == vm["id"]  # not handed to the next VM
    assert availability(client, "g.1") == (3, "gpu")
    assert client.wait_task(client.delete("/v1/vms/stuck").body["id"])["status"] == "succeeded"
    assert availability(client, "g.1") == (4, "gpu")
