"""DAO for vm_migrations: one row per migrate task, saying where its VM goes and how far it got."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from src.database.records import RecordTable
from src.database.vms import Held, plus_claims
from src.database.volumes import count_held

# The phases a move holds its target claim in; from `committed` on, the VM's row holds it.
CLAIMING = ("queued", "preparing", "transferring")
ACTIVE = (*CLAIMING, "committed")
_CLAIMING_SQL = "(" + ", ".join(f"'{phase}'" for phase in CLAIMING) + ")"
_ACTIVE_SQL = "(" + ", ".join(f"'{phase}'" for phase in ACTIVE) + ")"


@dataclass(frozen=True)
class MigrationRow:
    task_id: str
    vm_id: str
    source: str
    target: str
    live: bool
    phase: str
    cpu: int
    ram: int
    disk_gb: int
    created_at: str
    updated_at: str
    was_running: bool = False
    numa_node: int | None = None
    node_cpus: list[int] = field(default_factory=list)
    pinned_cpus: list[int] = field(default_factory=list)
    # What the move made on the target, to remove when it rolls back: ["domain", uuid] and
    # [pool, volume] or ["file", path] pairs, in the order made.
    made: list[list[str]] = field(default_factory=list)
    error_code: str | None = None


_TABLE = RecordTable[MigrationRow](
    "vm_migrations",
    "task_id, vm_id, source, target, live, phase, cpu, ram, disk_gb, created_at, updated_at, "
    "was_running, numa_node, node_cpus, pinned_cpus, made, error_code",
    MigrationRow, json_fields=("node_cpus", "pinned_cpus", "made"),
    flags=("live", "was_running"))


def insert(conn: sqlite3.Connection, move: MigrationRow) -> None:
    """Raises: sqlite3.IntegrityError when the VM has a move under way already."""
    _TABLE.insert(conn, move)


def get(conn: sqlite3.Connection, task_id: str) -> MigrationRow | None:
    return _TABLE.get(conn, task_id)


def active_for_vm(conn: sqlite3.Connection, vm_id: str) -> MigrationRow | None:
    found = _TABLE.select(conn, f"vm_id = ? AND phase IN {_ACTIVE_SQL}", (vm_id,))
    return found[0] if found else None


def list_active(conn: sqlite3.Connection) -> list[MigrationRow]:
    return _TABLE.select(conn, f"phase IN {_ACTIVE_SQL} ORDER BY created_at")


def set_phase(conn: sqlite3.Connection, task_id: str, phase: str, now: str,
              error_code: str | None = None) -> None:
    conn.execute("UPDATE vm_migrations SET phase = ?, error_code = coalesce(?, error_code), "
                 "updated_at = ? WHERE task_id = ?", (phase, error_code, now, task_id))


def add_made(conn: sqlite3.Connection, task_id: str, what: list[str], now: str) -> None:
    """Record one thing made on the target (before it is made: a crash in between leaves a
    name to remove that may not exist, never a file nobody knows of)."""
    conn.execute("UPDATE vm_migrations SET made = json_insert(made, '$[#]', json(?)), "
                 "updated_at = ? WHERE task_id = ?", (json.dumps(what), now, task_id))


def commit(conn: sqlite3.Connection, move: MigrationRow, vnc_port: int | None,
           renames: dict[str, str], volume_ids: list[str], now: str) -> None:
    """The move is done: the VM, its volumes, their layers and the GPU ledger say target, in
    the caller's one transaction (the VM's row takes over the claim; the source's GPUs go
    back). renames: the root disk's layers whose names differ on the target."""
    conn.execute("UPDATE vms SET host = ?, numa_node = ?, pinned_cpus = ?, vnc_port = ?, "
                 "updated_at = ? WHERE id = ?",
                 (move.target, move.numa_node, json.dumps(move.pinned_cpus), vnc_port, now,
                  move.vm_id))
    conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ? AND host = ?",
                 (move.vm_id, move.source))
    owners = [move.vm_id, *volume_ids]
    marks = ", ".join("?" * len(owners))
    for volume_id in volume_ids:  # the usage counters follow (migration 017)
        count_held(conn, volume_id, -1)
    conn.execute(f"UPDATE volumes SET host = ?, updated_at = ? WHERE id IN ({marks})",
                 (move.target, now, *owners))
    for volume_id in volume_ids:
        count_held(conn, volume_id, 1)
    conn.execute(f"UPDATE disk_layers SET host = ? WHERE owner IN ({marks})",
                 (move.target, *owners))
    for old, new in renames.items():
        for sql in ("UPDATE disk_layers SET name = ? WHERE owner = ? AND name = ?",
                    "UPDATE disk_layers SET parent = ? WHERE owner = ? AND parent = ?",
                    "UPDATE snapshots SET layer = ? WHERE owner = ? AND layer = ?",
                    "UPDATE root_disk_tops SET layer = ? WHERE vm_id = ? AND layer = ?"):
            conn.execute(sql, (new, move.vm_id, old))
    set_phase(conn, move.task_id, "committed", now)


def release_target(conn: sqlite3.Connection, move: MigrationRow, now: str,
                   error_code: str | None = None) -> None:
    """The move rolled back: its claim on the target (GPUs included) goes back."""
    conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ? AND host = ?",
                 (move.vm_id, move.target))
    set_phase(conn, move.task_id, "rolled_back", now, error_code)


def with_moves(conn: sqlite3.Connection, held: dict[str, Held]) -> dict[str, Held]:
    """held (what VMs hold, by host) plus what moves under way claim on their targets."""
    return plus_claims(held, conn.execute(
        f"SELECT target, cpu, ram, disk_gb, pinned_cpus FROM vm_migrations "
        f"WHERE phase IN {_CLAIMING_SQL}"))
