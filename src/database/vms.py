"""DAO for the vms table."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

from src.database.rows import field_names, filled
from src.vocabulary import DOMAIN_NAME_PREFIX


@dataclass(frozen=True)
class VmRow:
    id: str
    name: str
    cpu: int
    ram: int
    disk_gb: int
    image_id: str
    image_name: str
    status: str
    vnc_port: int | None
    error_code: str | None
    error_message: str | None
    created_at: str
    updated_at: str
    ip_addresses: list[dict[str, str]] = field(default_factory=list)
    mac: str | None = None
    flavor_name: str | None = None
    numa_node: int | None = None
    pinned_cpus: list[int] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)
    project: str = "default"
    domain_name: str = ""  # libvirt's name for its domain: iaas-<id>, or the name of older VMs
    host: str = "local"  # the host it runs on

    def __post_init__(self) -> None:
        if not self.domain_name:  # a new VM: its domain is named by its id
            object.__setattr__(self, "domain_name", DOMAIN_NAME_PREFIX + self.id)


# In VmRow's field order, so a row becomes a VmRow without building a dict. A VM's GPUs are
# those of its host: a migration's claim on its target is not the VM's until it commits.
_SELECT = ("SELECT v.id, v.name, v.cpu, v.ram, v.disk_gb, v.image_id, i.name AS image_name, "
           "v.status, v.vnc_port, v.error_code, v.error_message, v.created_at, v.updated_at, "
           "v.ip_addresses, v.mac, v.flavor_name, v.numa_node, v.pinned_cpus, "
           "(SELECT json_group_array(a.gpu_id) FROM gpu_allocations a WHERE a.vm_id = v.id "
           "AND a.host = v.host) AS gpus, "
           "v.project, v.domain_name, v.host "
           "FROM vms v JOIN images i ON i.id = v.image_id")
_JSON_COLUMNS = (13, 17, 18)  # ip_addresses, pinned_cpus, gpus
_GPUS = 18
_DOMAIN_NAME = 20
_FIELDS = field_names(VmRow)


def _row(row: tuple[Any, ...]) -> VmRow:
    """A VmRow as VmRow(*row) would build it, in half the time (one per VM listed)."""
    values = list(row)
    for index in _JSON_COLUMNS:
        raw = values[index]
        # orjson: 0.3 µs for a VM's address list where json takes 1.4
        values[index] = [] if raw == "[]" else orjson.loads(raw)  # most lists are empty
    values[_GPUS].sort()
    if not values[_DOMAIN_NAME]:  # what VmRow.__post_init__ does
        values[_DOMAIN_NAME] = DOMAIN_NAME_PREFIX + values[0]
    return filled(VmRow, _FIELDS, values)


def _select(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> list[VmRow]:
    """The VmRows of a _SELECT query, read as plain tuples: _row takes the columns by
    position, so a sqlite3.Row per VM (0.3 µs each) would buy nothing."""
    cursor = conn.execute(sql, params)
    cursor.row_factory = None  # applies to the rows fetched from here on: all of them
    return [_row(row) for row in cursor]


def insert(conn: sqlite3.Connection, vm: VmRow) -> None:
    """Raises: sqlite3.IntegrityError when the name is taken in its project (or the id is)."""
    conn.execute("INSERT INTO vms (id, name, domain_name, cpu, ram, disk_gb, image_id, status, "
                 "mac, flavor_name, numa_node, pinned_cpus, project, host, created_at, "
                 "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (vm.id, vm.name, vm.domain_name, vm.cpu, vm.ram, vm.disk_gb, vm.image_id,
                  vm.status, vm.mac, vm.flavor_name, vm.numa_node, json.dumps(vm.pinned_cpus),
                  vm.project, vm.host, vm.created_at, vm.updated_at))


def find(conn: sqlite3.Connection, id_or_name: str, project: str | None = None) -> list[VmRow]:
    """The VM with this id, else every VM with this name (one per project); with project, only
    that project's."""
    # A name may look like another VM's id: the id wins.
    rows = _select(conn, f"{_SELECT} WHERE (v.id = ? OR v.name = ?) AND (? IS NULL OR v.project = ?) "
                   "ORDER BY v.id = ? DESC, v.project",
                   (id_or_name, id_or_name, project, project, id_or_name))
    return rows[:1] if rows and rows[0].id == id_or_name else rows


def get(conn: sqlite3.Connection, vm_id: str, project: str | None = None) -> VmRow | None:
    """The VM with this id; with project, only if it belongs to that project."""
    rows = _select(conn, f"{_SELECT} WHERE v.id = ? AND (? IS NULL OR v.project = ?)",
                   (vm_id, project, project))
    return rows[0] if rows else None


def list_page(conn: sqlite3.Connection, *, status: str | None, name: str | None,
              after: VmRow | None, limit: int, project: str | None = None) -> list[VmRow]:
    """VMs ordered by (created_at, id), filtered, starting after the marker VM."""
    where, params = [], []
    if project is not None:
        where.append("v.project = ?")
        params.append(project)
    if status is not None:
        where.append("v.status = ?")
        params.append(status)
    if name is not None:
        where.append("v.name = ?")
        params.append(name)
    if after is not None:
        where.append("(v.created_at, v.id) > (?, ?)")
        params += [after.created_at, after.id]
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY v.created_at, v.id LIMIT ?"
    return _select(conn, sql, (*params, limit))


def list_all(conn: sqlite3.Connection) -> list[VmRow]:
    return _select(conn, _SELECT)


def list_ids(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM vms")]


def set_status(conn: sqlite3.Connection, vm_id: str, status: str, now: str,
               error: tuple[str, str] | None = None, only_from: str | None = None) -> bool:
    """Set status (and error); with only_from, only while the VM is still in that status.

    Returns whether the row changed.
    """
    code, message = error if error else (None, None)
    sql = "UPDATE vms SET status = ?, error_code = ?, error_message = ?, updated_at = ? WHERE id = ?"
    params: tuple[object, ...] = (status, code, message, now, vm_id)
    if only_from is not None:
        sql += " AND status = ?"
        params += (only_from,)
    return conn.execute(sql, params).rowcount == 1


def set_status_if_idle(conn: sqlite3.Connection, vm: VmRow, status: str, now: str,
                       error: tuple[str, str] | None) -> bool:
    """Set status only if the VM still shows what vm shows and no task holds it."""
    code, message = error if error else (None, None)
    cursor = conn.execute(
        "UPDATE vms SET status = ?, error_code = ?, error_message = ?, updated_at = ? "
        "WHERE id = ? AND status = ? AND coalesce(error_code, '') = ? AND NOT EXISTS ("
        "SELECT 1 FROM tasks t WHERE t.vm_id = vms.id AND t.status IN ('queued', 'running'))",
        (status, code, message, now, vm.id, vm.status, vm.error_code or ""))
    return cursor.rowcount == 1


def set_addresses(conn: sqlite3.Connection, vm_id: str, addresses: list[dict[str, str]],
                  now: str) -> None:
    conn.execute("UPDATE vms SET ip_addresses = ?, updated_at = ? WHERE id = ?",
                 (json.dumps(addresses), now, vm_id))


def set_vnc_port(conn: sqlite3.Connection, vm_id: str, port: int | None, now: str) -> None:
    conn.execute("UPDATE vms SET vnc_port = ?, updated_at = ? WHERE id = ?", (port, now, vm_id))


def release_resources(conn: sqlite3.Connection, vm_id: str) -> None:
    """The VM stops counting against capacity: its build failed, nothing of it runs."""
    conn.execute("UPDATE vms SET holds_resources = 0, pinned_cpus = '[]' WHERE id = ?", (vm_id,))
    conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ?", (vm_id,))
    conn.execute("DELETE FROM partition_allocations WHERE vm_id = ?", (vm_id,))


@dataclass(frozen=True)
class Held:
    """What VMs that still hold resources take from the host."""

    vcpus: int
    ram_mib: int
    disk_gb: int
    pinned_cpus: set[int]


def plus_claims(held: dict[str, Held], claims: sqlite3.Cursor) -> dict[str, Held]:
    """held (by host) plus claims: rows of (target, cpu, ram, disk_gb, pinned_cpus JSON), what
    moves and rebuilds under way claim on their targets."""
    total = dict(held)
    for target, cpu, ram, disk_gb, pinned in claims:
        before = total.get(target, Held(vcpus=0, ram_mib=0, disk_gb=0, pinned_cpus=set()))
        total[target] = Held(vcpus=before.vcpus + cpu, ram_mib=before.ram_mib + ram,
                             disk_gb=before.disk_gb + disk_gb,
                             pinned_cpus=before.pinned_cpus | set(json.loads(pinned)))
    return total


def allocated(conn: sqlite3.Connection) -> dict[str, Held]:
    """What VMs hold, by host; hosts where nothing is held are absent."""
    held = {host: Held(vcpus=int(vcpus), ram_mib=int(ram), disk_gb=int(disk), pinned_cpus=set())
            for host, vcpus, ram, disk in conn.execute(
                "SELECT host, sum(cpu), sum(ram), sum(disk_gb) FROM vms "
                "WHERE holds_resources = 1 GROUP BY host")}
    for host, cpus in conn.execute("SELECT host, pinned_cpus FROM vms WHERE holds_resources = 1 "
                                   "AND pinned_cpus != '[]'"):
        held[host].pinned_cpus.update(json.loads(cpus))
    return held


def list_on(conn: sqlite3.Connection, host: str) -> list[VmRow]:
    return _select(conn, _SELECT + " WHERE v.host = ?", (host,))


def delete(conn: sqlite3.Connection, vm_id: str) -> None:
    conn.execute("DELETE FROM vms WHERE id = ?", (vm_id,))


def delete_all(conn: sqlite3.Connection) -> list[str]:
    """Remove every VM row; return the ids removed."""
    ids = list_ids(conn)
    conn.execute("DELETE FROM vms")
    return ids


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    return {status: count for status, count in
            conn.execute("SELECT status, count(*) FROM vms GROUP BY status")}


def set_placed(conn: sqlite3.Connection, vm_id: str, host: str, numa_node: int | None,
               pinned_cpus: list[int], now: str) -> bool:
    """A VM that waited for capacity (queued) is placed on host: it holds what it claimed and
    builds. False when it no longer waits (deleted, expired)."""
    return conn.execute(
        "UPDATE vms SET status = 'building', host = ?, numa_node = ?, pinned_cpus = ?, "
        "holds_resources = 1, updated_at = ? WHERE id = ? AND status = 'queued'",
        (host, numa_node, json.dumps(pinned_cpus), now, vm_id)).rowcount == 1
