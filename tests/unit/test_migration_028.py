"""Migration 028 on a database of 023 with an mdev held and a VF offer: the mdev keeps its row
(no address), the VF offer has no addresses until the next refresh (so it offers none), and
afterwards a VF address is held once per host."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from src.database import partitions as partition_dao
from src.database.db import Database

AT = "2026-12-01T00:00:00.000000Z"


def test_028_keeps_mdevs_and_holds_each_vf_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate(until=23)
    with db.write() as conn:
        conn.execute("INSERT INTO images (id, name, file, format, created_at) "
                     "VALUES ('i-1', 'base', 'base.qcow2', 'qcow2', ?)", (AT,))
        for vm_id in ("v-1", "v-2"):
            conn.execute("INSERT INTO vms (id, name, cpu, ram, disk_gb, image_id, status, "
                         "created_at, updated_at, domain_name) VALUES (?, ?, 1, 256, 1, 'i-1', "
                         "'running', ?, ?, ?)", (vm_id, vm_id, AT, AT, f"iaas-{vm_id}"))
        conn.execute("INSERT INTO gpu_partitions (host, parent, type_id, name, total, "
                     "refreshed_at, kind) VALUES ('local', '0000:3b:00.0', 'sriov_vf', NULL, 2, "
                     "?, 'vf')", (AT,))
        conn.execute("INSERT INTO partition_allocations (mdev_uuid, host, parent, type_id, "
                     "vm_id, allocated_at) VALUES ('u-1', 'local', '0000:5e:00.0', "
                     "'nvidia-700', 'v-1', ?)", (AT,))
    assert 28 in db.migrate(until=28)
    with db.write() as conn:
        (offer,) = partition_dao.list_all(conn)
        assert (offer.kind, offer.total, offer.functions) == ("vf", 2, ())
        assert [row.is_mdev for row in partition_dao.for_vm(conn, "v-1")] == [True]
        vf = partition_dao.MdevRow("u-2", "local", "0000:3b:00.0", "sriov_vf", "v-2", AT,
                                   "0000:3b:00.4")
        partition_dao.allocate(conn, vf)
        with pytest.raises(sqlite3.IntegrityError):
            partition_dao.allocate(conn, partition_dao.MdevRow(
                "u-3", "local", "0000:3b:00.0", "sriov_vf", "v-1", AT, "0000:3b:00.4"))
        assert partition_dao.vfs_taken(conn) == {("local", "0000:3b:00.4")}
