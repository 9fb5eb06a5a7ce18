"""A create's build record on a test-driver host with NUMA nodes and GPUs: the create writes it
with the VM and its task, a task an older API queued (no record, version 0) still builds the
same VM, and a record of a version this code does not know fails its task and frees the VM,
once, however often its message comes back."""
from __future__ import annotations

import email
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from src.app import Core, build_core
from src.config import Config
from src.database import gpus as gpu_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.services.hosts.gpus import GpuInventory
from src.services.images.catalog import NewImage
from src.services.rules.access import Principal
from src.services.vms import build_record
from src.services.vms.compute import ComputeService, CreateRequest
from src.services.vms.flavors import FlavorService
from tests.conftest import make_qcow2
from tests.integration.test_cloud_init import read_seed
from tests.integration.test_gpus import DEVICES, ONE_GPU
from tests.integration.test_redelivery import Outbox
from tests.support import host_xml

ADMIN = Principal("t-admin", "default", "admin")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "ml@workstation")
USER_DATA = "#!/bin/sh\necho 'héllo' > /tmp/x\n"
GPU_FLAVOR = {**ONE_GPU, "hugepages": True}
# What ComputeService.create wrote for it before build records (main at 7247a6f): arguments
# beside the VM's columns and GPU rows.
OLDER_PAYLOAD = {"args": {"ssh_keys": [KEY], "user_data": USER_DATA, "hugepages": True,
                          "node_cpus": list(range(8))}}


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-host.xml"
    path.write_text(host_xml("iaas-test", cpus=16, memory_gib=64, numa_nodes=2, devices=DEVICES))
    return path


@pytest.fixture
def core(config: Config) -> Iterator[Core]:
    """Every service, with creates queued to an outbox no worker reads: each test runs the
    task's step itself, as a worker would on delivery."""
    core = build_core(config)
    core.hosts.start()
    try:
        make_qcow2(config.images_dir / "base.qcow2")
        core.images.create(NewImage(name="base", format="qcow2", file="base.qcow2"), ADMIN)
        GpuInventory(core.db, core.hosts).refresh()
        FlavorService(core.db).create(GPU_FLAVOR)
        yield core
    finally:
        core.hosts.close()


def queue_create(core: Core, name: str = "trainer") -> tuple[str, str]:
    """(vm id, task id) of a GPU VM's create, queued and not run."""
    compute = ComputeService(core.db, core.hosts, core.images, Outbox(), core.capacity)
    view = compute.create(CreateRequest(name=name, image_name="base", flavor=GPU_FLAVOR["name"],
                                        ssh_keys=[KEY], user_data=USER_DATA), ADMIN)
    return view.row.id, view.task.id


def rows(core: Core, vm_id: str, task_id: str) -> tuple[vm_dao.VmRow, task_dao.TaskRow]:
    with core.db.read() as conn:
        vm, task = vm_dao.get(conn, vm_id), task_dao.get(conn, task_id)
    assert vm is not None and task is not None
    return vm, task


def set_payload(core: Core, task_id: str, payload: dict[str, Any]) -> None:
    with core.db.write() as conn:
        task_dao.set_payload(conn, task_id, json.dumps(payload))


def test_the_create_writes_the_record_with_the_vm_and_its_task(core: Core,
                                                                config: Config) -> None:
    vm_id, task_id = queue_create(core)
    vm, task = rows(core, vm_id, task_id)
    payload = json.loads(task.payload)
    assert set(payload) == {"build"} and payload["build"]["version"] == build_record.VERSION
    record = build_record.from_payload(payload, vm_id, lambda _args: pytest.fail("version 0"))
    assert (record.host, record.cpu, record.ram_mib, record.disk_gb, record.mac) == (
        vm.host, vm.cpu, vm.ram, vm.disk_gb, vm.mac)
    assert [gpu.address for gpu in record.placement.gpus] == vm.gpus == ["0000:3b:00.0"]
    assert record.gpu_functions == ["0000:3b:00.0", "0000:3b:00.1"]
    assert record.placement.numa_node == vm.numa_node == 0
    assert list(record.placement.pinned_cpus) == vm.pinned_cpus == [0, 1]
    assert record.placement.node_cpus == tuple(range(8))
    assert record.image.path == str(config.images_dir / "base.qcow2")
    assert (record.network, record.options.hugepages) == (config.network, True)
    assert record.cloud_init.ssh_keys == (KEY,) and record.cloud_init.user_data == USER_DATA


def built_domain(core: Core, vm_id: str) -> ET.Element:
    return ET.fromstring(core.hosts.get("local").hypervisor.domain_xml(vm_id))


def test_a_create_an_older_api_queued_still_builds(core: Core, config: Config) -> None:
    vm_id, task_id = queue_create(core)
    set_payload(core, task_id, OLDER_PAYLOAD)
    assert core.execution.step(task_id) is None
    vm, task = rows(core, vm_id, task_id)
    assert (task.status, task.error_code, vm.status) == ("succeeded", None, "running")
    domain = built_domain(core, vm_id)
    assert [(a.get("bus"), a.get("slot"), a.get("function"))
            for a in domain.iterfind("./devices/hostdev/source/address")] == [
        ("0x3b", "0x00", "0x0"), ("0x3b", "0x00", "0x1")]
    assert domain.find("./numatune/memory").get("nodeset") == "0"
    assert [pin.get("cpuset") for pin in domain.iterfind("./cputune/vcpupin")] == ["0", "1"]
    assert domain.find("./memoryBacking/hugepages") is not None
    assert domain.find("./devices/interface/mac").get("address") == vm.mac
    files = read_seed(config.instances_dir / vm_id / "seed.iso")
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": vm_id, "local-hostname": "trainer"}
    parts = [part for part in email.message_from_bytes(files["user-data"]).walk()
             if not part.is_multipart()]
    assert yaml.safe_load(parts[0].get_payload(decode=True))["ssh_authorized_keys"] == [KEY]
    assert parts[1].get_payload(decode=True) == USER_DATA.encode()


def test_version_0_rebuilds_the_record_the_create_wrote(core: Core) -> None:
    vm_id, task_id = queue_create(core)
    _, task = rows(core, vm_id, task_id)
    written = core.steps.record_of(vm_id, json.loads(task.payload))
    assert core.steps.record_of(vm_id, OLDER_PAYLOAD) == written


def test_a_record_of_an_unknown_version_fails_its_task_and_frees_the_vm(core: Core) -> None:
    vm_id, task_id = queue_create(core)
    _, task = rows(core, vm_id, task_id)
    payload = json.loads(task.payload)
    payload["build"]["version"] = 7
    set_payload(core, task_id, payload)
    published: list[tuple[int, float]] = []
    # A worker's delivery: the step ends the task; nothing is handed on to run again.
    assert core.execution.step(task_id, 0, lambda seq, after: published.append((seq, after))) \
        is None
    assert published == []
    vm, task = rows(core, vm_id, task_id)
    message = ("The task's build record is version 7; this server reads versions 0 to 5. "
               "A newer API queued it: upgrade this worker, then create the VM again.")
    assert (task.status, task.error_code, task.error_message) == (
        "failed", "build_record_unsupported", message)
    assert (vm.status, vm.error_code, vm.error_message) == (
        "error", "build_record_unsupported", message)
    assert (vm.gpus, vm.pinned_cpus) == ([], [])  # nothing of it is on the host: all goes back
    with core.db.read() as conn:
        assert gpu_dao.list_free(conn, None)["local"][0].id == "0000:3b:00.0"
    assert core.hosts.get("local").hypervisor.power_state(vm_id) == "missing"
    assert core.execution.step(task_id, 0) is None  # delivered again: nothing changes
    assert rows(core, vm_id, task_id) == (vm, task)


def test_a_build_whose_vm_is_gone_makes_nothing(core: Core) -> None:
    """The record alone could build a VM nobody has any more: the build looks first."""
    vm_id, task_id = queue_create(core)
    with core.db.write() as conn:
        conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ?", (vm_id,))
        conn.execute("DELETE FROM vms WHERE id = ?", (vm_id,))
    assert core.execution.step(task_id) is None
    with core.db.read() as conn:
        task = task_dao.get(conn, task_id)
    assert task is not None
    assert (task.status, task.error_code) == ("failed", "vm_gone")
    assert core.hosts.get("local").hypervisor.power_state(vm_id) == "missing"
