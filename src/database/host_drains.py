"""DAO for host_drains: a host's last drain, the moves it queued and the VMs it could not move."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DrainRow:
    host: str
    started_at: str
    moves: list[dict[str, str]] = field(default_factory=list)  # task_id, vm_id, vm
    unmovable: list[dict[str, str]] = field(default_factory=list)  # vm_id, vm, reason


def put(conn: sqlite3.Connection, drain: DrainRow) -> None:
    """The host's drain (replacing an earlier one)."""
    conn.execute("INSERT OR REPLACE INTO host_drains (host, started_at, moves, unmovable) "
                 "VALUES (?, ?, ?, ?)", (drain.host, drain.started_at, json.dumps(drain.moves),
                                         json.dumps(drain.unmovable)))


def get(conn: sqlite3.Connection, host: str) -> DrainRow | None:
    row = conn.execute("SELECT host, started_at, moves, unmovable FROM host_drains "
                       "WHERE host = ?", (host,)).fetchone()
    if row is None:
        return None
    return DrainRow(row["host"], row["started_at"], json.loads(row["moves"]),
                    json.loads(row["unmovable"]))


def remove(conn: sqlite3.Connection, host: str) -> None:
    conn.execute("DELETE FROM host_drains WHERE host = ?", (host,))


def running_moves(conn: sqlite3.Connection, host: str) -> int:
    """Migrate tasks of the host's drain that run now (IAAS_DRAIN_PARALLEL bounds them)."""
    row = conn.execute("SELECT count(*) FROM tasks WHERE action = 'migrate' AND status = "
                       "'running' AND json_extract(payload, '$.args.drain') = ?",
                       (host,)).fetchone()
    return int(row[0])


def progress(conn: sqlite3.Connection, host: str) -> dict[str, Any] | None:
    """How far the host's drain got (GET /v1/hosts/{host} shows it), or None: never drained."""
    drain = get(conn, host)
    if drain is None:
        return None
    counts = {"moved": 0, "moving": 0, "waiting": 0}
    unmovable = [dict(entry) for entry in drain.unmovable]
    tasks = []
    for move in drain.moves:
        task = conn.execute("SELECT status, error_code, error_message FROM tasks WHERE id = ?",
                            (move["task_id"],)).fetchone()
        status = task["status"] if task else "failed"
        tasks.append({**move, "status": status})
        if status == "succeeded":
            counts["moved"] += 1
        elif status == "running":
            counts["moving"] += 1
        elif status == "queued":  # its turn comes (IAAS_DRAIN_PARALLEL)
            counts["waiting"] += 1
        else:  # it failed (or expired): the VM stayed, and says why
            unmovable.append({"vm_id": move["vm_id"], "vm": move["vm"],
                              "task_id": move["task_id"],
                              "reason": (task["error_message"] if task else None)
                              or "its migration task is gone"})
    busy = counts["moving"] + counts["waiting"]
    return {"status": "draining" if busy else "done", "started_at": drain.started_at,
            "vms": len(drain.moves) + len(drain.unmovable), **counts,
            "tasks": tasks, "unmovable": unmovable}
