"""The build record: it round-trips through a task's JSON payload, a payload of the code before
records (version 0) rebuilds the same record from the VM's rows, and a record this code cannot
read (a newer version, an unknown field, a wrong type) is refused with a clear message."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.database.gpus import GpuRow
from src.database.images import ImageRow
from src.database.vms import VmRow
from src.services.rules.placement import Claim
from src.services.vms import build_record
from src.services.vms.build_record import (
    INVALID,
    UNSUPPORTED,
    VERSION,
    BuildOptions,
    BuildRecord,
    CloudInit,
    GpuClaim,
    ImageRef,
    MdevClaim,
    Nic,
    Placement,
    UnreadableRecord,
    VfClaim,
    VolumeDisk,
    legacy_record,
    record_for,
)

NOW = "2026-01-01T00:00:00.000000Z"
VM_ID = "6f1c9a52-6a38-4d0e-9a3e-1d5b8f4f2a10"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "ml@workstation")
RECORD = BuildRecord(
    vm_id=VM_ID, name="trainer-01", project="ml", domain_name=f"iaas-{VM_ID}", host="rack-2",
    image=ImageRef(id="img-1", name="Ubuntu-Base-22.04", path="/srv/images/ubuntu.qcow2",
                   format="qcow2", sha256="ab" * 32),
    cpu=4, ram_mib=8192, disk_gb=40, mac="52:54:00:12:ab:ef", network="iaas-net",
    placement=Placement(gpus=(GpuClaim("0000:3b:00.0", ("0000:3b:00.0", "0000:3b:00.1")),
                              GpuClaim("0000:5e:00.0", ("0000:5e:00.0",))),
                        numa_node=1, node_cpus=(8, 9, 10, 11, 12), pinned_cpus=(8, 9, 10, 11)),
    cloud_init=CloudInit(ssh_keys=(KEY,), user_data="#!/bin/sh\necho 'héllo ✓' > /tmp/x\n"),
    options=BuildOptions(hugepages=True))


def never(_args: dict[str, Any]) -> BuildRecord:
    raise AssertionError("a versioned record must not be rebuilt from the rows")


def through_json(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as another process reads it from the task row."""
    loaded: dict[str, Any] = json.loads(json.dumps(payload))
    return loaded


def test_a_record_round_trips_through_the_task_payload() -> None:
    payload = through_json(RECORD.to_payload())
    assert payload["build"]["version"] == VERSION == 5
    assert build_record.from_payload(payload, VM_ID, never) == RECORD


def test_a_record_with_only_the_defaults_round_trips() -> None:
    plain = BuildRecord(vm_id=VM_ID, name="web", project="default", domain_name=f"iaas-{VM_ID}",
                        host="local", image=ImageRef("img-1", "base", "/srv/base.qcow2", "qcow2"),
                        cpu=1, ram_mib=512, disk_gb=1, mac="52:54:00:00:00:01", network="n")
    payload = through_json(plain.to_payload())
    assert build_record.from_payload(payload, VM_ID, never) == plain
    assert plain.gpu_functions == [] and plain.seed.user_data is None


def test_what_the_build_reads_comes_from_the_record() -> None:
    assert RECORD.gpu_functions == ["0000:3b:00.0", "0000:3b:00.1", "0000:5e:00.0"]
    assert RECORD.base_path == Path("/srv/images/ubuntu.qcow2")
    seed = RECORD.seed
    assert (seed.instance_id, seed.hostname, seed.ssh_keys, seed.mac) == (
        VM_ID, "trainer-01", (KEY,), "52:54:00:12:ab:ef")
    assert seed.user_data == RECORD.cloud_init.user_data


def rows() -> tuple[VmRow, list[GpuRow], ImageRow]:
    """The rows a create on main left for RECORD's VM."""
    row = VmRow(id=VM_ID, name="trainer-01", cpu=4, ram=8192, disk_gb=40, image_id="img-1",
                image_name="Ubuntu-Base-22.04", status="building", vnc_port=None,
                error_code=None, error_message=None, created_at=NOW, updated_at=NOW,
                mac="52:54:00:12:ab:ef", numa_node=1, pinned_cpus=[8, 9, 10, 11],
                gpus=["0000:3b:00.0", "0000:5e:00.0"], project="ml", host="rack-2")
    gpus = [GpuRow(id=address, vendor_id="0x10de", vendor_name=None, product_id="0x2330",
                   product_name="H100", iommu_group=None, numa_node=1, driver=None,
                   unavailable_reason=None, refreshed_at=NOW, functions=list(functions),
                   vm_id=VM_ID, host="rack-2")
            for address, functions in (("0000:3b:00.0", ("0000:3b:00.0", "0000:3b:00.1")),
                                       ("0000:5e:00.0", ("0000:5e:00.0",)))]
    image = ImageRow(id="img-1", name="Ubuntu-Base-22.04", file="ubuntu.qcow2", format="qcow2",
                     size_bytes=None, virtual_size_bytes=None, created_at=NOW,
                     sha256="ab" * 32)
    return row, gpus, image


# What ComputeService.create wrote on main (commit 7247a6f): arguments only, beside the rows.
MAIN_PAYLOAD = {"args": {"ssh_keys": [KEY], "user_data": RECORD.cloud_init.user_data,
                         "hugepages": True, "node_cpus": [8, 9, 10, 11, 12]}}


def test_a_payload_of_the_code_before_records_rebuilds_the_same_record() -> None:
    row, gpus, image = rows()
    seen: list[dict[str, Any]] = []

    def legacy(args: dict[str, Any]) -> BuildRecord:
        seen.append(args)
        return legacy_record(row, gpus, image, Path("/srv/images/ubuntu.qcow2"), "iaas-net", args)

    assert build_record.from_payload(through_json(MAIN_PAYLOAD), VM_ID, legacy) == RECORD
    assert seen == [MAIN_PAYLOAD["args"]]


def test_the_create_and_version_0_make_one_record_from_one_claim() -> None:
    row, gpus, image = rows()
    claim = Claim(gpus=gpus, numa_node=1, node_cpus=[8, 9, 10, 11, 12], pinned_cpus=[8, 9, 10, 11])
    made = record_for(row, image, Path("/srv/images/ubuntu.qcow2"), claim, "iaas-net",
                      CloudInit((KEY,), RECORD.cloud_init.user_data), BuildOptions(True))
    assert made == RECORD


@pytest.mark.parametrize("version", [6, 99, 0, -1, "1", 1.0, True, None])
def test_a_version_this_code_does_not_know_is_refused_clearly(version: object) -> None:
    payload = through_json(RECORD.to_payload())
    payload["build"]["version"] = version
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert refused.value.code == UNSUPPORTED
    assert refused.value.message == (
        f"The task's build record is version {version!r}; this server reads versions 0 to 5. "
        "A newer API queued it: upgrade this worker, then create the VM again.")


def test_a_record_without_a_version_is_refused() -> None:
    payload = through_json(RECORD.to_payload())
    del payload["build"]["version"]
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert refused.value.code == UNSUPPORTED


def edited(change: str) -> dict[str, Any]:
    payload = through_json(RECORD.to_payload())
    build = payload["build"]
    if change == "unknown field":  # a newer writer that added a part without a new version
        build["reservation"] = "r-1"
    elif change == "unknown nested field":
        build["placement"]["gpus"][0]["mdev"] = "nvidia-35"
    elif change == "missing field":
        del build["mac"]
    elif change == "wrong type":
        build["cpu"] = "4"
    elif change == "boolean as a number":
        build["placement"]["pinned_cpus"] = [True]
    elif change == "not an object":
        build["image"] = "ubuntu"
    return payload


@pytest.mark.parametrize(("change", "reason"), [
    ("unknown field", "unknown field 'reservation'"),
    ("unknown nested field", "unknown field 'mdev'"),
    ("missing field", "the field 'mac' is missing"),
    ("wrong type", "expected a whole number, got '4'"),
    ("boolean as a number", "expected a whole number, got True"),
    ("not an object", "expected an object, got 'ubuntu'"),
])
def test_a_record_that_is_not_the_shape_of_its_version_is_refused(change: str,
                                                                  reason: str) -> None:
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(edited(change), VM_ID, never)
    assert refused.value.code == INVALID
    assert refused.value.message == (
        f"The task's build record (version 5) cannot be read: {reason}.")


def test_a_version_1_record_builds_without_volumes_and_may_not_name_any() -> None:
    payload = through_json(RECORD.to_payload())
    payload["build"]["version"] = 1
    del payload["build"]["volumes"]
    del payload["build"]["nics"]
    del payload["build"]["placement"]["mdevs"]
    del payload["build"]["placement"]["vfs"]
    assert build_record.from_payload(payload, VM_ID, never) == RECORD
    payload["build"]["volumes"] = []
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert refused.value.message == (
        "The task's build record (version 1) cannot be read: unknown field 'volumes'.")


def test_a_version_2_record_carries_its_volumes() -> None:
    record = replace(RECORD, volumes=(VolumeDisk("v-1", "vdc"),
                                      VolumeDisk("v-2", "vdd", read_only=True, shareable=True)))
    assert build_record.from_payload(through_json(record.to_payload()), VM_ID, never) == record


def test_a_payload_of_the_code_before_records_without_its_arguments_is_refused() -> None:
    row, gpus, image = rows()

    def legacy(args: dict[str, Any]) -> BuildRecord:
        return legacy_record(row, gpus, image, Path("/srv/x.qcow2"), "n", args)

    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload({"args": {"ssh_keys": []}}, VM_ID, legacy)
    assert (refused.value.code, refused.value.message) == (
        INVALID, ("The task's build record (version 0) cannot be read: the field 'node_cpus' "
                  "is missing."))


def test_the_record_of_another_vm_is_refused() -> None:
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(through_json(RECORD.to_payload()), "another-vm", never)
    assert refused.value.code == INVALID
    assert VM_ID in refused.value.message and "another-vm" in refused.value.message


def test_a_version_2_record_builds_without_partitions_and_may_not_name_any() -> None:
    payload = through_json(RECORD.to_payload())
    payload["build"]["version"] = 2
    del payload["build"]["placement"]["mdevs"]
    del payload["build"]["placement"]["vfs"]
    del payload["build"]["nics"]
    assert build_record.from_payload(payload, VM_ID, never) == RECORD
    payload["build"]["placement"]["mdevs"] = []
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert refused.value.message == (
        "The task's build record (version 2) cannot be read: unknown field 'mdevs'.")


def test_a_version_3_record_carries_its_gpu_partitions() -> None:
    record = replace(RECORD, placement=replace(RECORD.placement, mdevs=(MdevClaim(
        "b1ae8bf6-38b0-4c81-9d44-78ce3f520496", "0000:3b:00.0", "nvidia-700"),)))
    assert build_record.from_payload(through_json(record.to_payload()), VM_ID, never) == record


def test_a_version_3_record_builds_with_one_nic_and_may_not_name_more() -> None:
    payload = through_json(RECORD.to_payload())
    payload["build"]["version"] = 3
    del payload["build"]["nics"]
    del payload["build"]["placement"]["vfs"]
    record = build_record.from_payload(payload, VM_ID, never)
    assert record == RECORD
    assert record.interfaces == (Nic("iaas-net", "52:54:00:12:ab:ef"),)
    payload["build"]["nics"] = []
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert refused.value.message == (
        "The task's build record (version 3) cannot be read: unknown field 'nics'.")


def test_a_version_4_record_carries_every_nic_in_order() -> None:
    nics = (Nic("lab", "52:54:00:00:00:0a"), Nic("data", "52:54:00:00:00:0b"))
    record = replace(RECORD, network="lab", mac="52:54:00:00:00:0a", nics=nics)
    loaded = build_record.from_payload(through_json(record.to_payload()), VM_ID, never)
    assert loaded == record and loaded.interfaces == nics
    payload = through_json(record.to_payload())
    payload["build"]["nics"][1]["filter"] = "x"  # a newer writer's part, without a new version
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert "unknown field 'filter'" in refused.value.message


def test_a_version_4_record_builds_without_virtual_functions_and_may_not_name_any() -> None:
    payload = through_json(RECORD.to_payload())
    payload["build"]["version"] = 4
    del payload["build"]["placement"]["vfs"]
    assert build_record.from_payload(payload, VM_ID, never) == RECORD
    payload["build"]["placement"]["vfs"] = []
    with pytest.raises(UnreadableRecord) as refused:
        build_record.from_payload(payload, VM_ID, never)
    assert refused.value.message == (
        "The task's build record (version 4) cannot be read: unknown field 'vfs'.")


def test_a_version_5_record_passes_its_virtual_function_through_as_a_pci_function() -> None:
    vf = VfClaim("0b7d1e0e-5c4a-4f59-9d0f-3f1b7a2c9e11", "0000:3b:00.4", "0000:3b:00.0")
    record = replace(RECORD, placement=Placement(vfs=(vf,)))
    assert build_record.from_payload(through_json(record.to_payload()), VM_ID, never) == record
    assert record.gpu_functions == ["0000:3b:00.4"]
