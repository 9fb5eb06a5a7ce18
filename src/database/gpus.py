"""DAO for the GPU inventory and the allocation ledger."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GpuRow:
    id: str  # PCI address on its host
    vendor_id: str
    vendor_name: str | None
    product_id: str
    product_name: str | None
    iommu_group: int | None
    numa_node: int | None
    driver: str | None
    unavailable_reason: str | None
    refreshed_at: str
    group_devices: list[dict[str, str]] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    vm_id: str | None = None
    host: str = "local"

    @property
    def status(self) -> str:
        if self.vm_id is not None:
            return "allocated"
        return "unavailable" if self.unavailable_reason else "free"


_DESCRIPTION = ("g.id, g.vendor_id, g.vendor_name, g.product_id, g.product_name, g.iommu_group, "
                "g.numa_node, g.driver, g.unavailable_reason, g.refreshed_at, g.group_devices, "
                "g.functions")
_SELECT = (f"SELECT {_DESCRIPTION}, a.vm_id, g.host FROM gpus g "
           "LEFT JOIN gpu_allocations a ON a.host = g.host AND a.gpu_id = g.id")


def _row(row: sqlite3.Row | tuple[Any, ...]) -> GpuRow:
    # _SELECT's columns are GpuRow's fields in order: by position (a dict per row cost a queue
    # pass over 200 GPUs a millisecond).
    (gpu_id, vendor_id, vendor_name, product_id, product_name, iommu_group, numa_node, driver,
     unavailable, refreshed_at, group_devices, functions, vm_id, host) = tuple(row)
    return GpuRow(gpu_id, vendor_id, vendor_name, product_id, product_name, iommu_group,
                  numa_node, driver, unavailable, refreshed_at, _list(group_devices),
                  _list(functions), vm_id, host)


def _list(text: str) -> list[Any]:
    return [] if text == "[]" else json.loads(text)  # most GPUs have no functions listed


def upsert(conn: sqlite3.Connection, gpu: GpuRow) -> None:
    """Insert or refresh a GPU's description; its allocation is left alone."""
    conn.execute(
        "INSERT INTO gpus (host, id, vendor_id, vendor_name, product_id, product_name, "
        "iommu_group, group_devices, functions, numa_node, driver, unavailable_reason, "
        "refreshed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(host, id) DO UPDATE SET "
        "vendor_id = excluded.vendor_id, vendor_name = excluded.vendor_name, "
        "product_id = excluded.product_id, product_name = excluded.product_name, "
        "iommu_group = excluded.iommu_group, group_devices = excluded.group_devices, "
        "functions = excluded.functions, numa_node = excluded.numa_node, "
        "driver = excluded.driver, unavailable_reason = excluded.unavailable_reason, "
        "refreshed_at = excluded.refreshed_at",
        (gpu.host, gpu.id, gpu.vendor_id, gpu.vendor_name, gpu.product_id, gpu.product_name,
         gpu.iommu_group, json.dumps(gpu.group_devices), json.dumps(gpu.functions),
         gpu.numa_node, gpu.driver, gpu.unavailable_reason, gpu.refreshed_at))


def list_all(conn: sqlite3.Connection, host: str | None = None) -> list[GpuRow]:
    return [_row(row) for row in conn.execute(
        _SELECT + " WHERE ? IS NULL OR g.host = ? ORDER BY g.host, g.id", (host, host))]


def assignable_rows(conn: sqlite3.Connection) -> list[GpuRow]:
    """Every assignable GPU as if no VM held it (vm_id None), by host and PCI address: each
    host's whole room."""
    cursor = conn.execute(f"SELECT {_DESCRIPTION}, NULL, g.host FROM gpus g "
                          "WHERE g.unavailable_reason IS NULL ORDER BY g.host, g.id")
    cursor.row_factory = None  # plain tuples (_row reads by position)
    return [_row(row) for row in cursor]


def assignable_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many GPUs each host has assignable (those assignable_rows lists), by host."""
    return {host: int(count) for host, count in conn.execute(
        "SELECT host, count(*) FROM gpus WHERE unavailable_reason IS NULL GROUP BY host")}


def list_free(conn: sqlite3.Connection, model: str | None) -> dict[str, list[GpuRow]]:
    """Assignable GPUs nobody holds, by host; with model, only those whose product name
    contains it."""
    sql = _SELECT + " WHERE a.vm_id IS NULL AND g.unavailable_reason IS NULL"
    params: tuple[str, ...] = ()
    if model:
        sql += " AND instr(lower(coalesce(g.product_name, '')), lower(?)) > 0"
        params = (model,)
    free: dict[str, list[GpuRow]] = {}
    cursor = conn.execute(sql + " ORDER BY g.host, g.id", params)
    cursor.row_factory = None  # plain tuples (_row reads by position)
    for row in cursor:
        gpu = _row(row)
        free.setdefault(gpu.host, []).append(gpu)
    return free


def for_vm(conn: sqlite3.Connection, vm_id: str) -> list[GpuRow]:
    return [_row(row) for row in conn.execute(_SELECT + " WHERE a.vm_id = ? ORDER BY g.id",
                                              (vm_id,))]


def allocate(conn: sqlite3.Connection, host: str, gpu_ids: list[str], vm_id: str,
             now: str) -> None:
    """Raises: sqlite3.IntegrityError if any of them is taken (the ledger's primary key)."""
    conn.executemany("INSERT INTO gpu_allocations (host, gpu_id, vm_id, allocated_at) "
                     "VALUES (?, ?, ?, ?)", [(host, gpu_id, vm_id, now) for gpu_id in gpu_ids])


def _in(values: list[str]) -> str:
    # An empty list must match nothing; "IN (NULL)" would make NOT IN match nothing too.
    return "(" + ", ".join("?" for _ in values) + ")" if values else "(SELECT 1 WHERE 0)"


def forget_absent(conn: sqlite3.Connection, host: str, present: list[str], now: str) -> None:
    """GPUs the host no longer has: forgotten, or kept and flagged while a VM still holds them."""
    held = "(SELECT gpu_id FROM gpu_allocations WHERE host = ?)"
    conn.execute(f"DELETE FROM gpus WHERE host = ? AND id NOT IN {_in(present)} "
                 f"AND id NOT IN {held}", (host, *present, host))
    conn.execute(f"UPDATE gpus SET unavailable_reason = 'not_present', refreshed_at = ? "
                 f"WHERE host = ? AND id NOT IN {_in(present)}", (now, host, *present))


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """GPUs by what GpuRow.status would say: allocated, unavailable or free."""
    return {status: count for status, count in conn.execute(
        "SELECT CASE WHEN a.vm_id IS NOT NULL THEN 'allocated' "
        "WHEN g.unavailable_reason IS NOT NULL THEN 'unavailable' ELSE 'free' END, count(*) "
        "FROM gpus g LEFT JOIN gpu_allocations a ON a.host = g.host AND a.gpu_id = g.id GROUP BY 1")}


def assignable(conn: sqlite3.Connection, model: str | None) -> list[tuple[str, str, bool]]:
    """(host, PCI address, held by a VM) of every assignable GPU, of the model when given (part
    of its product name, any case): the few columns a booking decision reads."""
    return [(host, gpu, bool(held)) for host, gpu, held in conn.execute(
        "SELECT g.host, g.id, a.vm_id IS NOT NULL FROM gpus g LEFT JOIN gpu_allocations a "
        "ON a.host = g.host AND a.gpu_id = g.id WHERE g.unavailable_reason IS NULL "
        "AND (? IS NULL OR instr(lower(coalesce(g.product_name, '')), lower(?)) > 0) "
        "ORDER BY g.host, g.id", (model or None, model or None))]


def holders(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
    """The VM holding each allocated GPU, by (host, PCI address)."""
    return {(host, gpu): vm_id for host, gpu, vm_id in conn.execute(
        "SELECT host, gpu_id, vm_id FROM gpu_allocations")}
