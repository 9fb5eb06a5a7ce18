"""GPU passthrough on qemu:///system, a host without GPUs or an IOMMU.

The GPU enters through the seam we own, a row in the inventory table, at a PCI address no
device has (so nothing real can be detached). Libvirt defines the q35, NUMA-bound, pinned,
hugepage-backed domain with its hostdevs and then refuses to start it; the API must fail the task
as gpu_passthrough_failed with libvirt's words and give everything back.
"""
from __future__ import annotations

import secrets
import uuid

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import domain_exists
from src.app import App
from src.database import gpus as gpu_dao
from src.hypervisor.domain_xml import DomainSpec, NicSpec, render_domain
from src.utils.clock import utc_now
from tests.e2e.conftest import register_tiny_image
from tests.support import Client

FAKE_GPU = "0000:fe:1f.0"  # no such bus on this machine: libvirt can never touch a real device
COMPANION = "0000:fe:1f.1"


def plant_gpu(app: App) -> None:
    with app.db.write() as conn:
        gpu_dao.upsert(conn, gpu_dao.GpuRow(
            id=FAKE_GPU, vendor_id="0x10de", vendor_name="NVIDIA Corporation",
            product_id="0x2330", product_name="GH100 [H100 SXM5 80GB]", iommu_group=99,
            numa_node=0, driver="vfio-pci", unavailable_reason=None, refreshed_at=utc_now(),
            group_devices=[{"address": COMPANION, "class": "0x040300", "role": "companion"}],
            functions=[FAKE_GPU, COMPANION]))


def planted(client: Client) -> dict[str, object]:
    """Our GPU row; the host may list its own (emulated) display adapters beside it."""
    return next(gpu for gpu in client.get("/v1/gpus").body["gpus"] if gpu["id"] == FAKE_GPU)


def test_passthrough_failure_rolls_back_and_frees_the_gpu(e2e_app: App,
                                                          system_conn: libvirt.virConnect) -> None:
    client = Client(e2e_app)
    register_tiny_image(client)
    plant_gpu(e2e_app)
    flavor = {"name": "e2e.gpu", "cpu": 2, "ram": 256, "disk_gb": 1, "gpu_count": 1,
              "gpu_model": "H100", "hugepages": True, "cpu_pinning": True, "numa_aligned": True}
    assert client.post("/v1/flavors", flavor).status == 201
    assert client.get("/v1/flavors/e2e.gpu/availability").body["available"] == 1

    reply = client.post("/v1/vms", {"name": f"e2e-gpu-{secrets.token_hex(3)}",
                                     "image_name": "tiny-linux", "flavor": "e2e.gpu"})
    assert reply.status == 202, reply.body
    vm = reply.body
    assert vm["gpus"] == [FAKE_GPU] and vm["numa_node"] == 0
    assert planted(client)["status"] == "allocated"
    task = client.wait_task(vm["task"]["id"])

    assert task["status"] == "failed"
    assert task["error"]["code"] == "gpu_passthrough_failed"
    assert "passthrough of host PCI devices" in task["error"]["message"]
    shown = client.get(f"/v1/vms/{vm['id']}").body
    assert (shown["status"], shown["error"]["code"]) == ("error", "gpu_passthrough_failed")
    assert shown["gpus"] == [] and shown["pinned_cpus"] == []
    gpu = planted(client)
    assert (gpu["status"], gpu["vm_id"]) == ("free", None)
    assert client.get("/v1/flavors/e2e.gpu/availability").body["available"] == 1
    assert not domain_exists(system_conn, vm["id"])
    assert not (e2e_app.config.instances_dir / vm["id"]).exists()


def test_passthrough_domain_defines_with_libvirt_validation(
        e2e_app: App, system_conn: libvirt.virConnect) -> None:
    """Hugepage, pinned and passthrough domains cannot start here, so define is their proof."""
    vm_id = str(uuid.uuid4())
    spec = DomainSpec(
        uuid=vm_id, name=f"e2e-gpu-xml-{secrets.token_hex(3)}", domain_type="qemu", cpu=2,
        ram_mib=256, disk_path=str(e2e_app.config.instances_dir / vm_id / "disk.qcow2"),
        disk_format="qcow2", nics=(NicSpec(e2e_app.config.network, "52:54:00:aa:bb:cc"),),
        console_log=str(e2e_app.config.instances_dir / vm_id / "console.log"),
        installation_id=e2e_app.installation_id, image_name="tiny-linux",
        title="gpu-xml", machine="q35", cpu_mode="maximum",
        hostdevs=((0, 0xfe, 0x1f, 0), (0, 0xfe, 0x1f, 1)), numa_node=0, cpuset="0-1",
        pinned_cpus=(0, 1), hugepages=True)
    e2e_app.hypervisor.define(render_domain(spec))  # VIR_DOMAIN_DEFINE_VALIDATE: libvirt's schema
    try:
        xml = system_conn.lookupByUUIDString(vm_id).XMLDesc()
    finally:
        e2e_app.hypervisor.undefine(vm_id)
    for needle in ("machine='pc-q35", "<hugepages/>", "mode='strict' nodeset='0'",
                   "<vcpupin vcpu='1' cpuset='1'/>", "<cpu mode='maximum'",
                   "<hostdev mode='subsystem' type='pci' managed='yes'>",
                   "bus='0xfe' slot='0x1f' function='0x1'"):
        assert needle in xml, needle
    assert not domain_exists(system_conn, vm_id)
