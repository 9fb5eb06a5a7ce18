"""GPU partitions (mdevs) over HTTP on a test-driver host: inventory from the node devices'
mdev_types, flavors with gpu_profile, counting per parent GPU, one type per GPU, never whole
and partitioned at once, the ledger per mdev UUID, the domain's mdev hostdev, and the mdev made
and removed through the hypervisor's node-device seam.

libvirt's test driver models mdev types and their counts but cannot make mdevs (it refuses
virNodeDeviceCreateXML), so the seam the build calls (Hypervisor.mdevs) is replaced here by
one that records what it was asked; the real one (src/hypervisor/mdevs.py) needs a GPU host."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.hypervisor.errors import HypervisorError
from src.hypervisor.mdevs import MdevRequest
from tests.conftest import make_qcow2
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import (
    ONE_GPU,
    create,
    running,
    status_of,
    until,
)
from tests.support import LiveServer, host_xml

MDEV_TYPES = """      <capability type='mdev_types'>
        <type id='nvidia-700'>
          <name>NVIDIA H100-1-10C</name>
          <deviceAPI>vfio-pci</deviceAPI>
          <availableInstances>2</availableInstances>
        </type>
        <type id='nvidia-701'>
          <name>NVIDIA H100-2-20C</name>
          <deviceAPI>vfio-pci</deviceAPI>
          <availableInstances>1</availableInstances>
        </type>
      </capability>
"""


def _gpu(address: str, group: int, mdev_types: str = "") -> str:
    bus = address[5:7]
    return f"""  <device>
    <name>pci_{address.replace(':', '_').replace('.', '_')}</name>
    <parent>computer</parent>
    <capability type='pci'>
      <class>0x030200</class>
      <domain>0</domain><bus>{int(bus, 16)}</bus><slot>0</slot><function>0</function>
      <product id='0x2330'>GH100 [H100 SXM5 80GB]</product>
      <vendor id='0x10de'>NVIDIA Corporation</vendor>
{mdev_types}      <iommuGroup number='{group}'><address domain='0x0000' bus='0x{bus}' slot='0x00' function='0x0'/></iommuGroup>
      <numa node='0'/>
    </capability>
  </device>
"""


class RecordedMdevs:
    """The hypervisor's mdev seam, recording what the build and the delete ask of it."""

    def __init__(self) -> None:
        self.made: dict[str, MdevRequest] = {}
        self.removed: list[str] = []
        self.refuse = False

    def create(self, request: MdevRequest) -> None:
        if self.refuse:
            raise HypervisorError("mdev type nvidia-700: no instances left on the parent")
        self.made[request.uuid] = request

    def remove(self, mdev_uuid: str) -> None:
        self.removed.append(mdev_uuid)


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "mdev-host.xml"
    path.write_text(host_xml("iaas-test", devices=_gpu("0000:3b:00.0", 12, MDEV_TYPES)
                             + _gpu("0000:5e:00.0", 13)))
    return path


@pytest.fixture
def mdevs(app: App) -> RecordedMdevs:
    recorded = RecordedMdevs()
    app.hypervisor.mdevs = recorded
    return recorded


def partition_flavor(name: str, profile: str) -> dict[str, Any]:
    return {"name": name, "cpu": 1, "ram": 512, "disk_gb": 1, "gpu_profile": profile}


@contextmanager
def served_with(app: App, flavors: Iterable[dict[str, Any]],
                refresh_gpus: bool = False) -> Iterator[HttpClient]:
    """The app on 127.0.0.1 with the image `base` and these flavors (and its GPUs read again)."""
    server = LiveServer(app)
    try:
        client = HttpClient(server.url)
        make_qcow2(app.config.images_dir / "base.qcow2")
        assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                          "format": "qcow2"}).status == 201
        for flavor in flavors:
            reply = client.post("/v1/flavors", flavor)
            assert reply.status == 201, reply.body
        if refresh_gpus:
            assert client.post("/v1/gpus/refresh", None).status == 200
        yield client
    finally:
        server.stop()


@pytest.fixture
def admin(app: App) -> Iterator[HttpClient]:
    with served_with(app, (ONE_GPU, partition_flavor("p.1", "nvidia-700"),
                           partition_flavor("p.2", "NVIDIA H100-2-20C"))) as client:
        yield client


def partitions(admin: HttpClient) -> dict[str, int]:
    return {entry["type"]: entry["available"]
            for entry in admin.get("/v1/gpus").body["partitions"]}


def refused(admin: HttpClient, name: str, flavor: str) -> str:
    reply = admin.post("/v1/vms", {"name": name, "image_name": "base", "flavor": flavor})
    assert reply.status == 409, reply.body
    code: str = reply.body["error"]["code"]
    return code


def test_partitions_are_listed_made_counted_per_gpu_and_removed_at_delete(
        app: App, admin: HttpClient, mdevs: RecordedMdevs) -> None:
    listed = admin.get("/v1/gpus").body["partitions"]
    assert [(p["parent"], p["type"], p["name"], p["total"], p["available_instances"])
            for p in listed] == [("0000:3b:00.0", "nvidia-700", "NVIDIA H100-1-10C", 2, 2),
                                 ("0000:3b:00.0", "nvidia-701", "NVIDIA H100-2-20C", 1, 1)]
    assert admin.get("/v1/flavors/p.1").body["gpu_profile"] == "nvidia-700"
    first = running(admin, create(admin, "part-1", "p.1"))
    assert first["gpus"] == []  # no whole GPU
    (made,) = mdevs.made.values()
    assert (made.parent, made.type_id) == ("0000:3b:00.0", "nvidia-700")
    root = ET.fromstring(app.hypervisor.domain_xml(first["id"]))
    (hostdev,) = root.iterfind("devices/hostdev")
    assert (hostdev.get("type"), hostdev.get("model")) == ("mdev", "vfio-pci")
    assert hostdev.find("source/address").get("uuid") == made.uuid
    assert partitions(admin) == {"nvidia-700": 1, "nvidia-701": 0}  # the GPU holds one type
    assert refused(admin, "other-type", "p.2") == "insufficient_capacity"
    whole = running(admin, create(admin, "whole", "g.1"))
    assert whole["gpus"] == ["0000:5e:00.0"]  # never the partitioned GPU
    assert refused(admin, "whole-2", "g.1") == "insufficient_capacity"
    second = running(admin, create(admin, "part-2", "p.1"))
    assert refused(admin, "part-3", "p.1") == "insufficient_capacity"
    assert len(set(mdevs.made)) == 2
    for vm in (first, second):
        reply = admin.delete(f"/v1/vms/{vm['id']}")
        assert admin.wait_task(reply.body["id"])["status"] == "succeeded"
    assert sorted(mdevs.removed) == sorted(mdevs.made)
    assert partitions(admin) == {"nvidia-700": 2, "nvidia-701": 1}
    assert running(admin, create(admin, "whole-3", "g.1"))["gpus"] == ["0000:3b:00.0"]
    assert partitions(admin) == {"nvidia-700": 0, "nvidia-701": 0}  # it is held whole
    assert refused(admin, "part-4", "p.1") == "insufficient_capacity"


def test_a_partition_the_host_cannot_make_fails_the_build_and_holds_nothing(
        app: App, admin: HttpClient, mdevs: RecordedMdevs) -> None:
    mdevs.refuse = True
    vm = create(admin, "part-1", "p.1")
    until(lambda: status_of(admin, vm) == "error", "the build failed")
    shown: dict[str, Any] = admin.get(f"/v1/vms/{vm['id']}").body
    assert shown["error"]["code"] == "mdev_create_failed"
    assert partitions(admin) == {"nvidia-700": 2, "nvidia-701": 1}
    assert app.hypervisor.power_state(vm["id"]) == "missing"


def test_a_flavor_asks_for_a_partition_or_whole_gpus_not_both(admin: HttpClient) -> None:
    reply = admin.post("/v1/flavors", {"name": "both", "cpu": 1, "ram": 512, "disk_gb": 1,
                                       "gpu_count": 1, "gpu_profile": "nvidia-700"})
    assert (reply.status, reply.body["error"]["code"]) == (400, "validation_failed")
    assert admin.get("/v1/flavors/both").status == 404


def test_a_vf_flavor_on_a_host_without_virtual_functions_is_refused_and_makes_nothing(
        app: App, admin: HttpClient, mdevs: RecordedMdevs) -> None:
    assert admin.post("/v1/flavors", {"name": "vf.1", "cpu": 1, "ram": 512, "disk_gb": 1,
                                      "gpu_profile": "sriov_vf"}).status == 201
    reply = admin.post("/v1/vms", {"name": "vf-1", "image_name": "base", "flavor": "vf.1"})
    assert reply.status == 409, reply.body
    error = reply.body["error"]
    assert error["code"] == "insufficient_capacity"
    assert error["message"] == (
        "Not enough gpu: 1 requested, 0 available: no host has a free GPU partition of profile "
        "'sriov_vf' (an SR-IOV virtual function of a GPU no VM holds whole; GET /v1/gpus lists "
        "the partitions of kind vf).")
    assert admin.get("/v1/vms").body["vms"] == [] and mdevs.made == {}
    assert app.hypervisor.power_states() == {}
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM partition_allocations").fetchone()[0] == 0
