"""DAO for the capacity queue: VMs that wait for room to be placed (capacity_waits)."""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)  # not frozen: a queue pass makes a thousand, and frozen's per-field
class WaitRow:  # setattr cost 1 µs each; nobody changes one (dataclasses.replace makes anew)
    vm_id: str
    task_id: str
    project: str
    since: str
    expires_at: str
    reason: str
    demand: dict[str, Any]  # the fields of placement.Demand
    pinned_host: str | None = None
    position: int | None = None
    estimated_start_at: str | None = None
    demand_text: str = ""  # demand as stored (canonical JSON): waits that ask alike share it
    networks: tuple[str, ...] | None = None  # those its record asks for (None: not recorded)


_COLUMNS = ("vm_id, task_id, project, since, expires_at, reason, demand, pinned_host, position, "
            "estimated_start_at, networks")


def _row(row: tuple[Any, ...], parsed: dict[str | None, Any] | None = None) -> WaitRow:
    """parsed: demands and network lists already read, by their text (a queue of a thousand
    holds a few; a list's JSON never equals an object's)."""
    (vm_id, task_id, project, since, expires_at, reason, text, pinned_host, position,
     estimate, networks) = row
    known = parsed if parsed is not None else {}
    if text not in known:
        known[text] = json.loads(text)
    if networks not in known:
        known[networks] = None if networks is None else tuple(json.loads(networks))
    # Waits that ask alike share one demand dict: nobody changes a WaitRow's demand.
    return WaitRow(vm_id, task_id, project, since, expires_at, reason, known[text],
                   pinned_host, position, estimate, text, known[networks])


def insert(conn: sqlite3.Connection, wait: WaitRow) -> None:
    values = asdict(wait)
    values.pop("demand_text")
    values["demand"] = json.dumps(wait.demand, sort_keys=True)
    values["networks"] = None if wait.networks is None else json.dumps(list(wait.networks))
    conn.execute(f"INSERT INTO capacity_waits ({_COLUMNS}) VALUES "
                 "(:vm_id, :task_id, :project, :since, :expires_at, :reason, :demand, "
                 ":pinned_host, :position, :estimated_start_at, :networks)", values)


def get(conn: sqlite3.Connection, vm_id: str) -> WaitRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM capacity_waits WHERE vm_id = ?",
                       (vm_id,)).fetchone()
    return _row(tuple(row)) if row else None


def of_vms(conn: sqlite3.Connection, vm_ids: list[str]) -> dict[str, WaitRow]:
    """The waits of these VMs (those that wait)."""
    found: dict[str, WaitRow] = {}
    for start in range(0, len(vm_ids), 500):  # SQLite's bound-parameter limit, with room
        chunk = vm_ids[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in conn.execute(f"SELECT {_COLUMNS} FROM capacity_waits WHERE vm_id IN "
                                f"({marks})", chunk):
            wait = _row(tuple(row))
            found[wait.vm_id] = wait
    return found


def list_all(conn: sqlite3.Connection, project: str | None = None) -> list[WaitRow]:
    """Every wait (or a project's), oldest first."""
    parsed: dict[str | None, Any] = {}
    # +since: one sort of the table beats walking the since index (a row lookup each) and
    # sorting its ties by vm_id after.
    cursor = conn.execute(f"SELECT {_COLUMNS} FROM capacity_waits WHERE ? IS NULL OR "
                          "project = ? ORDER BY +since, vm_id", (project, project))
    cursor.row_factory = None  # plain tuples: a queue pass reads a thousand
    return [_row(row, parsed) for row in cursor]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM capacity_waits").fetchone()[0])


def network_asks(conn: sqlite3.Connection) -> tuple[bool, list[str]]:
    """(some wait is recorded asking for networks, the tasks of the waits whose networks were
    not recorded): whether a pass must look at hosts' networks, without reading every task."""
    asking = conn.execute("SELECT EXISTS (SELECT 1 FROM capacity_waits WHERE networks IS NOT "
                          "NULL AND networks != '[]')").fetchone()[0]
    return bool(asking), [task for task, in conn.execute(
        "SELECT task_id FROM capacity_waits WHERE networks IS NULL")]


def older_than(conn: sqlite3.Connection, before: str) -> list[WaitRow]:
    """The waits asked for before `before` (past the backfill limit), oldest first."""
    return [_row(tuple(row)) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM capacity_waits WHERE since < ? ORDER BY since, vm_id",
        (before,))]


def expired(conn: sqlite3.Connection, now: str) -> list[WaitRow]:
    return [_row(tuple(row)) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM capacity_waits WHERE expires_at <= ? ORDER BY since", (now,))]


def delete(conn: sqlite3.Connection, vm_id: str) -> bool:
    """Whether the VM was waiting (and waits no more)."""
    return conn.execute("DELETE FROM capacity_waits WHERE vm_id = ?", (vm_id,)).rowcount == 1


Finding = tuple[WaitRow, int, str | None, str]  # a wait as read, its position, estimate, reason


def set_findings(conn: sqlite3.Connection, findings: list[Finding]) -> None:
    """Write each wait's (position, estimated_start_at, reason) where it changed; findings: one
    for every wait the table holds, each as read in this transaction (waits deleted since may
    be among them).

    A placement moves every wait behind it up by one: the most common move goes as one UPDATE
    of the range of positions the waits so moved had (a statement per row cost a pass over a
    thousand 2.4 ms, this 0.4), then the others one by one, those in that range it must not
    move included."""
    # How far each moves when only its position changes (0: nothing does), None otherwise.
    moves = [None if wait.position is None or wait.estimated_start_at != estimate
             or wait.reason != reason else position - wait.position
             for wait, position, estimate, reason in findings]
    singles = [finding for finding, move in zip(findings, moves, strict=True) if move != 0]
    common = Counter(move for move in moves if move)
    if common:
        by = common.most_common(1)[0][0]
        moved = [finding[0].position or 0 for finding, move in zip(findings, moves, strict=True)
                 if move == by]
        low, high = min(moved), max(moved)
        around = [finding for finding, move in zip(findings, moves, strict=True) if move != by
                  and (move != 0 or low <= (finding[0].position or 0) <= high)]
        if len(around) < len(singles):
            conn.execute("UPDATE capacity_waits SET position = position + ? "
                         "WHERE position BETWEEN ? AND ?", (by, low, high))
            singles = around
    conn.executemany("UPDATE capacity_waits SET position = ?, estimated_start_at = ?, "
                     "reason = ? WHERE vm_id = ?",
                     [(position, estimate, reason, wait.vm_id)
                      for wait, position, estimate, reason in singles])


@dataclass(frozen=True)
class Holding:
    """What one project's VMs hold now (those that still hold resources)."""

    vcpus: int = 0
    ram: int = 0
    disk_gb: int = 0
    gpus: int = 0


def holdings(conn: sqlite3.Connection, projects: list[str]) -> dict[str, Holding]:
    """What each of these projects holds: the fair order's numerators, in two grouped reads."""
    marks = ", ".join("?" for _ in projects) or "NULL"
    sizes = {project: (int(cpu), int(ram), int(disk)) for project, cpu, ram, disk in conn.execute(
        "SELECT project, sum(cpu), sum(ram), sum(disk_gb) FROM vms WHERE holds_resources = 1 "
        f"AND project IN ({marks}) GROUP BY project", projects)}
    # A partition (an mdev, a VF) counts as one GPU, as in the project's gpus quota. From the
    # allocations to their VMs (CROSS JOIN keeps that order): SQLite went from every VM of the
    # projects to an index of the allocations it built anew, 0.85 ms at 1,200 VMs, now 0.25.
    gpus = {project: int(held) for project, held in conn.execute(
        "SELECT v.project, count(*) FROM (SELECT vm_id FROM gpu_allocations UNION ALL "
        "SELECT vm_id FROM partition_allocations) a CROSS JOIN vms v ON v.id = a.vm_id "
        f"WHERE v.project IN ({marks}) GROUP BY v.project", projects)}
    return {project: Holding(*sizes.get(project, (0, 0, 0)), gpus=gpus.get(project, 0))
            for project in projects}
