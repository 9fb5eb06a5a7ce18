"""DAO for host_evacuations: a host's last evacuation, its tasks and the VMs it left behind."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HostEvacuationRow:
    host: str
    started_at: str
    rebuild_lost_disks: bool
    tasks: list[dict[str, str]] = field(default_factory=list)  # task_id, vm_id, vm, target
    skipped: list[dict[str, str]] = field(default_factory=list)  # vm_id, vm, reason, message


def put(conn: sqlite3.Connection, row: HostEvacuationRow) -> None:
    """The host's evacuation (replacing an earlier one)."""
    conn.execute("INSERT OR REPLACE INTO host_evacuations (host, started_at, rebuild_lost_disks, "
                 "tasks, skipped) VALUES (?, ?, ?, ?, ?)",
                 (row.host, row.started_at, int(row.rebuild_lost_disks), json.dumps(row.tasks),
                  json.dumps(row.skipped)))


def get(conn: sqlite3.Connection, host: str) -> HostEvacuationRow | None:
    row = conn.execute("SELECT host, started_at, rebuild_lost_disks, tasks, skipped FROM "
                       "host_evacuations WHERE host = ?", (host,)).fetchone()
    if row is None:
        return None
    return HostEvacuationRow(row["host"], row["started_at"], bool(row["rebuild_lost_disks"]),
                             json.loads(row["tasks"]), json.loads(row["skipped"]))


def remove(conn: sqlite3.Connection, host: str) -> None:
    conn.execute("DELETE FROM host_evacuations WHERE host = ?", (host,))


def progress(conn: sqlite3.Connection, host: str) -> dict[str, Any] | None:
    """How far the host's last evacuation got, and the stale copies it still holds
    (GET /v1/hosts/{host} shows it), or None: never evacuated."""
    row = get(conn, host)
    if row is None:
        return None
    tasks = []
    for entry in row.tasks:
        task = conn.execute("SELECT status FROM tasks WHERE id = ?",
                            (entry["task_id"],)).fetchone()
        tasks.append({**entry, "status": task["status"] if task else "failed"})
    stale = [{"vm_id": vm_id, "vm": name} for vm_id, name in conn.execute(
        "SELECT vm_id, vm_name FROM vm_evacuations WHERE stale_on = ? AND stale_cleaned_at "
        "IS NULL ORDER BY created_at", (host,))]
    busy = any(task["status"] in ("queued", "running") for task in tasks)
    return {"status": "evacuating" if busy else "done", "started_at": row.started_at,
            "rebuild_lost_disks": row.rebuild_lost_disks, "tasks": tasks,
            "skipped": row.skipped, "stale_copies": stale}
