"""DAO for GPU partitions: the mdev types and SR-IOV virtual functions each GPU offers, and the
one ledger of the partitions VMs hold (its primary key makes one mdev UUID belong to one VM, its
unique index one VF address on a host)."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionRow:
    host: str
    parent: str
    type_id: str
    name: str | None
    total: int
    refreshed_at: str
    used: int = 0  # mdevs of this type our VMs hold on the parent
    kind: str = "mdev"  # or "vf": an SR-IOV virtual function of the parent (PARTITION_KINDS)
    functions: tuple[str, ...] = ()  # for a VF offer, the PCI addresses of its VFs


@dataclass(frozen=True)
class MdevRow:
    """One ledger entry: an mdev by its UUID, or a VF by its address (keyed by a UUID too)."""

    mdev_uuid: str
    host: str
    parent: str
    type_id: str
    vm_id: str
    allocated_at: str
    address: str | None = None  # a VF's own PCI address (None for an mdev)

    @property
    def is_mdev(self) -> bool:
        return self.address is None


_SELECT = ("SELECT p.host, p.parent, p.type_id, p.name, p.total, p.refreshed_at, "
           "(SELECT count(*) FROM partition_allocations a WHERE a.host = p.host "
           "AND a.parent = p.parent AND a.type_id = p.type_id), p.kind, p.functions "
           "FROM gpu_partitions p")


def replace_host(conn: sqlite3.Connection, host: str, rows: list[PartitionRow]) -> None:
    """The host's offer as its last refresh found it (types it no longer offers go)."""
    conn.execute("DELETE FROM gpu_partitions WHERE host = ?", (host,))
    conn.executemany("INSERT INTO gpu_partitions (host, parent, type_id, name, total, "
                     "refreshed_at, kind, functions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(row.host, row.parent, row.type_id, row.name, row.total,
                       row.refreshed_at, row.kind, json.dumps(list(row.functions)))
                      for row in rows])


def _offer(host: str, parent: str, type_id: str, name: str | None, total: int,
           refreshed_at: str, used: int, kind: str, functions: str) -> PartitionRow:
    return PartitionRow(host, parent, type_id, name, total, refreshed_at, used, kind,
                        tuple(json.loads(functions)))


def list_all(conn: sqlite3.Connection, host: str | None = None) -> list[PartitionRow]:
    return [_offer(*row) for row in conn.execute(
        _SELECT + " WHERE ? IS NULL OR p.host = ? ORDER BY p.host, p.parent, p.type_id",
        (host, host))]


def vfs_taken(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(host, PCI address) of every virtual function a VM holds."""
    return {(host, address) for host, address in conn.execute(
        "SELECT host, address FROM partition_allocations WHERE address IS NOT NULL")}


def used_on(conn: sqlite3.Connection, host: str) -> dict[tuple[str, str], int]:
    """How many mdevs our VMs hold on the host, by (parent, type)."""
    return {(parent, type_id): int(count) for parent, type_id, count in conn.execute(
        "SELECT parent, type_id, count(*) FROM partition_allocations WHERE host = ? "
        "GROUP BY parent, type_id", (host,))}


def parents_in_use(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(host, parent) of every GPU some VM holds a partition of: not for whole-GPU passthrough."""
    return {(host, parent) for host, parent in conn.execute(
        "SELECT DISTINCT host, parent FROM partition_allocations")}


def physical_functions(offers: list[PartitionRow]) -> dict[tuple[str, str], tuple[str, str]]:
    """(host, VF address) -> (host, its physical function), from the VF offers."""
    return {(offer.host, vf): (offer.host, offer.parent)
            for offer in offers if offer.kind == "vf" for vf in offer.functions}


def gpus_split(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(host, GPU) of every GPU VMs hold partitions of: an mdev on one of its VFs splits the
    physical function too (a vGPU card in SR-IOV mode offers its mdev types on its VFs)."""
    split = parents_in_use(conn)
    if not split:
        return split
    physical = physical_functions(list_all(conn))
    return split | {physical[parent] for parent in split if parent in physical}


def allocate(conn: sqlite3.Connection, row: MdevRow) -> None:
    """Raises: sqlite3.IntegrityError when the UUID, or the VF on its host, is taken."""
    conn.execute("INSERT INTO partition_allocations (mdev_uuid, host, parent, type_id, vm_id, "
                 "allocated_at, address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (row.mdev_uuid, row.host, row.parent, row.type_id, row.vm_id,
                  row.allocated_at, row.address))


def for_vm(conn: sqlite3.Connection, vm_id: str) -> list[MdevRow]:
    return [MdevRow(*row) for row in conn.execute(
        "SELECT mdev_uuid, host, parent, type_id, vm_id, allocated_at, address FROM "
        "partition_allocations WHERE vm_id = ? ORDER BY mdev_uuid", (vm_id,))]


def release(conn: sqlite3.Connection, vm_id: str) -> None:
    conn.execute("DELETE FROM partition_allocations WHERE vm_id = ?", (vm_id,))
