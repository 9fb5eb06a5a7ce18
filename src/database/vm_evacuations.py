"""DAO for vm_evacuations: one row per evacuate task, saying where its VM is rebuilt, how far it
got, and whether its dead host still holds a stale copy."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from src.database.records import RecordTable
from src.database.vms import Held, plus_claims
from src.database.volumes import count_held

# The phases an evacuation holds its target claim in; once done, the VM's row holds it.
CLAIMING = ("queued", "building")
_CLAIMING_SQL = "(" + ", ".join(f"'{phase}'" for phase in CLAIMING) + ")"


@dataclass(frozen=True)
class EvacuationRow:
    task_id: str
    vm_id: str
    vm_name: str
    source: str
    target: str
    phase: str
    keeps_disks: bool
    start: bool
    cpu: int
    ram: int
    disk_gb: int
    created_at: str
    updated_at: str
    numa_node: int | None = None
    node_cpus: list[int] = field(default_factory=list)
    pinned_cpus: list[int] = field(default_factory=list)
    lost_volumes: list[dict[str, str]] = field(default_factory=list)
    # What the rebuild made on the target, to remove when it rolls back: [kind, name] pairs in
    # the order made (recorded before each is made).
    made: list[list[str]] = field(default_factory=list)
    error_code: str | None = None
    stale_on: str | None = None
    stale_cleaned_at: str | None = None


_TABLE = RecordTable[EvacuationRow](
    "vm_evacuations",
    "task_id, vm_id, vm_name, source, target, phase, keeps_disks, start, cpu, ram, disk_gb, "
    "created_at, updated_at, numa_node, node_cpus, pinned_cpus, lost_volumes, made, error_code, "
    "stale_on, stale_cleaned_at",
    EvacuationRow, json_fields=("node_cpus", "pinned_cpus", "lost_volumes", "made"),
    flags=("keeps_disks", "start"))


def insert(conn: sqlite3.Connection, row: EvacuationRow) -> None:
    """Raises: sqlite3.IntegrityError when the VM has an evacuation under way already."""
    _TABLE.insert(conn, row)


def get(conn: sqlite3.Connection, task_id: str) -> EvacuationRow | None:
    return _TABLE.get(conn, task_id)


def list_claiming(conn: sqlite3.Connection) -> list[EvacuationRow]:
    return _TABLE.select(conn, f"phase IN {_CLAIMING_SQL} ORDER BY created_at")


def of_host(conn: sqlite3.Connection, source: str) -> list[EvacuationRow]:
    """Every evacuation off source, oldest first."""
    return _TABLE.select(conn, "source = ? ORDER BY created_at", (source,))


def stale_on(conn: sqlite3.Connection, host: str) -> list[EvacuationRow]:
    """The VMs rebuilt elsewhere whose old copy host still holds."""
    return _TABLE.select(conn, "stale_on = ? AND stale_cleaned_at IS NULL ORDER BY created_at",
                         (host,))


def set_phase(conn: sqlite3.Connection, task_id: str, phase: str, now: str,
              error_code: str | None = None) -> None:
    conn.execute("UPDATE vm_evacuations SET phase = ?, error_code = coalesce(?, error_code), "
                 "updated_at = ? WHERE task_id = ?", (phase, error_code, now, task_id))


def add_made(conn: sqlite3.Connection, task_id: str, what: list[str], now: str) -> None:
    """Record one thing made on the target, before it is made."""
    conn.execute("UPDATE vm_evacuations SET made = json_insert(made, '$[#]', json(?)), "
                 "updated_at = ? WHERE task_id = ?", (json.dumps(what), now, task_id))


def release_target(conn: sqlite3.Connection, row: EvacuationRow, now: str,
                   error_code: str | None = None) -> None:
    """The rebuild rolled back: its claim on the target (GPUs included) goes back."""
    conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ? AND host = ?",
                 (row.vm_id, row.target))
    set_phase(conn, row.task_id, "rolled_back", now, error_code)


def commit(conn: sqlite3.Connection, row: EvacuationRow, status: str, vnc_port: int | None,
           now: str) -> None:
    """The VM runs (or is defined) on the target: its row, its GPUs, its disks' and volumes'
    rows say so, in the caller's one transaction; the dead host's GPU claims go back and the
    dead host is recorded as holding a stale copy.

    Its volumes that were reachable move with it (rows and layers); the lost ones are detached
    and stay on the dead host. Without keeps_disks its root disk's snapshots and layers are
    gone (they lived in the lost disk)."""
    conn.execute("UPDATE vms SET host = ?, numa_node = ?, pinned_cpus = ?, vnc_port = ?, "
                 "status = ?, error_code = NULL, error_message = NULL, ip_addresses = '[]', "
                 "updated_at = ? WHERE id = ?",
                 (row.target, row.numa_node, json.dumps(row.pinned_cpus), vnc_port, status, now,
                  row.vm_id))
    conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ? AND host = ?",
                 (row.vm_id, row.source))
    lost = [volume["volume_id"] for volume in row.lost_volumes]
    for volume_id in lost:
        conn.execute("DELETE FROM volume_attachments WHERE volume_id = ? AND vm_id = ?",
                     (volume_id, row.vm_id))
    kept = [volume_id for (volume_id,) in conn.execute(
        "SELECT volume_id FROM volume_attachments WHERE vm_id = ?", (row.vm_id,))]
    owners = kept + ([row.vm_id] if row.keeps_disks else [])
    if owners:
        marks = ", ".join("?" * len(owners))
        for volume_id in kept:  # the usage counters follow (migration 017)
            count_held(conn, volume_id, -1)
        conn.execute(f"UPDATE volumes SET host = ?, updated_at = ? WHERE id IN ({marks})",
                     (row.target, now, *owners))
        for volume_id in kept:
            count_held(conn, volume_id, 1)
        conn.execute(f"UPDATE disk_layers SET host = ? WHERE owner IN ({marks})",
                     (row.target, *owners))
    if not row.keeps_disks:
        conn.execute("DELETE FROM snapshots WHERE owner = ?", (row.vm_id,))
        conn.execute("DELETE FROM disk_layers WHERE owner = ?", (row.vm_id,))
        conn.execute("DELETE FROM root_disk_tops WHERE vm_id = ?", (row.vm_id,))
    conn.execute("UPDATE vm_evacuations SET phase = 'done', stale_on = source, updated_at = ? "
                 "WHERE task_id = ?", (now, row.task_id))


def mark_cleaned(conn: sqlite3.Connection, task_id: str, now: str) -> None:
    conn.execute("UPDATE vm_evacuations SET stale_cleaned_at = ?, updated_at = ? "
                 "WHERE task_id = ?", (now, now, task_id))


def with_evacuations(conn: sqlite3.Connection, held: dict[str, Held]) -> dict[str, Held]:
    """held (what VMs hold, by host) plus what rebuilds under way claim on their targets."""
    return plus_claims(held, conn.execute(
        f"SELECT target, cpu, ram, disk_gb, pinned_cpus FROM vm_evacuations "
        f"WHERE phase IN {_CLAIMING_SQL}"))
