"""The vms and vm_nics DAOs read back exactly the rows they stored, from the plain tuples they
fetch (rows are filled without their dataclass __init__: they must equal what it builds)."""
from __future__ import annotations

import dataclasses

import pytest

from src.database import gpus as gpu_dao
from src.database import vm_nics as nic_dao
from src.database import vms as vm_dao
from src.database.db import Database
from tests.unit.conftest import IMAGE_ID, NOW

ADDRESSES = [{"address": "10.0.0.5", "family": "ipv4"}]
GPU_IDS = ["0000:82:00.0", "0000:03:00.0"]  # allocated out of order: rows list them sorted


def full_row() -> vm_dao.VmRow:
    """A VM with every optional field set, so a field the DAO drops or misreads shows."""
    return vm_dao.VmRow(
        id="22222222-2222-2222-2222-222222222222", name="full", cpu=2, ram=512, disk_gb=3,
        image_id=IMAGE_ID, image_name="base", status="running", vnc_port=None,
        error_code=None, error_message=None, created_at=NOW, updated_at=NOW,
        mac="52:54:00:12:34:56", flavor_name="small", numa_node=1, pinned_cpus=[3, 1],
        project="p", host="local")


def store(db: Database, row: vm_dao.VmRow) -> None:
    with db.write() as conn:
        vm_dao.insert(conn, row)
        vm_dao.set_addresses(conn, row.id, ADDRESSES, NOW)
        vm_dao.set_vnc_port(conn, row.id, 5901, NOW)
        for gpu_id in GPU_IDS:
            gpu_dao.upsert(conn, gpu_dao.GpuRow(
                id=gpu_id, vendor_id="10de", vendor_name=None, product_id="1eb8",
                product_name="Tesla T4", iommu_group=None, numa_node=0, driver="vfio-pci",
                unavailable_reason=None, refreshed_at=NOW))
            gpu_dao.allocate(conn, "local", [gpu_id], row.id, NOW)


def test_a_row_reads_back_as_vmrow_builds_it(db: Database) -> None:
    row = full_row()
    store(db, row)
    expected = dataclasses.replace(row, ip_addresses=ADDRESSES, vnc_port=5901,
                                   gpus=sorted(GPU_IDS))
    with db.read() as conn:
        listed = vm_dao.list_page(conn, status=None, name=None, after=None, limit=10)
        got = vm_dao.get(conn, row.id)
        found = vm_dao.find(conn, "full")
    assert listed == [expected] and got == expected and found == [expected]
    with pytest.raises(dataclasses.FrozenInstanceError):
        listed[0].status = "stopped"  # type: ignore[misc]


def test_an_empty_domain_name_reads_as_vmrow_names_it(db: Database) -> None:
    row = full_row()
    store(db, row)
    with db.write() as conn:
        conn.execute("UPDATE vms SET domain_name = '' WHERE id = ?", (row.id,))
    with db.read() as conn:
        got = vm_dao.get(conn, row.id)
    assert got is not None and got.domain_name == "iaas-" + row.id


def test_nics_read_back_as_nicrow_builds_them(db: Database) -> None:
    row = full_row()
    store(db, row)
    with db.write() as conn:
        nic_dao.put(conn, row.id, [("iaas-a", "52:54:00:00:00:01"), ("iaas-b", "52:54:00:00:00:02")])
        nic_dao.set_addresses(conn, row.id, "52:54:00:00:00:02", ADDRESSES)
    with db.read() as conn:
        found = nic_dao.for_vms(conn, [row.id, "no-such-vm"])
    assert found == {row.id: [nic_dao.NicRow(row.id, 0, "iaas-a", "52:54:00:00:00:01"),
                              nic_dao.NicRow(row.id, 1, "iaas-b", "52:54:00:00:00:02", ADDRESSES)]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[row.id][0].network = "other"  # type: ignore[misc]
