"""DAO for vm_terms: what a VM agreed to beyond its size (its reservation, preemptible, its
max_runtime_s and the end of its current run) and the GPUs a stop for a reservation gave back."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from src.vocabulary import ACTIVE_TASK_STATUSES


@dataclass(frozen=True)
class Terms:
    vm_id: str
    reservation_id: str | None = None
    preemptible: bool = False
    released_gpus: list[str] = field(default_factory=list)
    max_runtime_s: int | None = None  # each run's limit: stopped after, its GPUs given back
    runs_until: str | None = None  # the current run's end (None: not running, or no limit)


_ACTIVE = "(" + ", ".join(f"'{status}'" for status in ACTIVE_TASK_STATUSES) + ")"
_COLUMNS = "vm_id, reservation_id, preemptible, released_gpus, max_runtime_s, runs_until"


def put(conn: sqlite3.Connection, terms: Terms) -> None:
    conn.execute(f"INSERT INTO vm_terms ({_COLUMNS}) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vm_id) DO UPDATE SET "
                 "reservation_id = excluded.reservation_id, preemptible = excluded.preemptible, "
                 "released_gpus = excluded.released_gpus, "
                 "max_runtime_s = excluded.max_runtime_s, runs_until = excluded.runs_until",
                 (terms.vm_id, terms.reservation_id, int(terms.preemptible),
                  json.dumps(sorted(terms.released_gpus)), terms.max_runtime_s,
                  terms.runs_until))


def _terms(row: tuple[object, ...]) -> Terms:
    vm_id, reservation_id, preemptible, released, max_runtime_s, runs_until = row
    return Terms(str(vm_id), reservation_id if isinstance(reservation_id, str) else None,
                 bool(preemptible), json.loads(str(released)),
                 max_runtime_s if isinstance(max_runtime_s, int) else None,
                 runs_until if isinstance(runs_until, str) else None)


def get(conn: sqlite3.Connection, vm_id: str) -> Terms:
    row = conn.execute(f"SELECT {_COLUMNS} FROM vm_terms WHERE vm_id = ?", (vm_id,)).fetchone()
    return _terms(tuple(row)) if row else Terms(vm_id)


def of_vms(conn: sqlite3.Connection, vm_ids: list[str] | None = None) -> dict[str, Terms]:
    """The terms of these VMs (every VM that has any when None); VMs without are absent."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM vm_terms")
    wanted = None if vm_ids is None else set(vm_ids)
    return {terms.vm_id: terms for terms in (_terms(tuple(row)) for row in rows)
            if wanted is None or terms.vm_id in wanted}


def bound_to(conn: sqlite3.Connection, reservation_id: str) -> list[str]:
    """The VMs that run in the reservation."""
    return [row[0] for row in conn.execute("SELECT vm_id FROM vm_terms WHERE reservation_id = ?",
                                           (reservation_id,))]


def count_bound(conn: sqlite3.Connection, reservation_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM vm_terms t JOIN vms v ON v.id = t.vm_id "
                            "WHERE t.reservation_id = ?", (reservation_id,)).fetchone()[0])


def holding_after_window(conn: sqlite3.Connection, now: str) -> list[tuple[str, str]]:
    """(VM, reservation) of VMs still holding GPUs although their reservation is over (ended,
    cancelled, or past its end)."""
    return [(row[0], row[1]) for row in conn.execute(
        "SELECT t.vm_id, t.reservation_id FROM vm_terms t "
        "JOIN reservations r ON r.id = t.reservation_id "
        "WHERE (r.status IN ('ended', 'cancelled') OR r.end_at <= ?) "
        "AND EXISTS (SELECT 1 FROM gpu_allocations a WHERE a.vm_id = t.vm_id)", (now,))]


def end_run(conn: sqlite3.Connection, vm_id: str, runs_until: str | None = None) -> None:
    """The VM's run is over; with runs_until, only that run (not one a start began since)."""
    conn.execute("UPDATE vm_terms SET runs_until = NULL WHERE vm_id = ? "
                 "AND (? IS NULL OR runs_until = ?)", (vm_id, runs_until, runs_until))


def runs_missing(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(VM, max_runtime_s) of the VMs with a limit found running (or paused) with no run while
    no task holds them: a start that succeeded but whose end was never seen (a restart between
    the two), or a domain started on the host."""
    return [(str(vm_id), int(limit)) for vm_id, limit in conn.execute(
        "SELECT t.vm_id, t.max_runtime_s FROM vm_terms t JOIN vms v ON v.id = t.vm_id "
        "WHERE t.max_runtime_s IS NOT NULL AND t.runs_until IS NULL "
        "AND v.status IN ('running', 'paused') AND NOT EXISTS (SELECT 1 FROM tasks k "
        f"WHERE k.vm_id = t.vm_id AND k.status IN {_ACTIVE})")]


def begin_run(conn: sqlite3.Connection, vm_id: str, runs_until: str) -> None:
    """The VM's run ends at runs_until, unless one was begun meanwhile."""
    conn.execute("UPDATE vm_terms SET runs_until = ? WHERE vm_id = ? AND runs_until IS NULL",
                 (runs_until, vm_id))


def past_runtime(conn: sqlite3.Connection, now: str) -> list[tuple[str, str]]:
    """(VM, end of its run) of the VMs whose current run reached its max_runtime_s."""
    return [(row[0], row[1]) for row in conn.execute(
        "SELECT vm_id, runs_until FROM vm_terms WHERE runs_until IS NOT NULL "
        "AND runs_until <= ? ORDER BY runs_until", (now,))]


def runs_ending(conn: sqlite3.Connection, now: str) -> list[tuple[str, int]]:
    """(end of run, GPUs held) of the VMs holding GPUs whose run has a limit, soonest first.
    A GPU a window claims from now to the run's end is left out: one claimed now comes back at
    the window's end, counted there (reservations.ends_of_running); one claimed later is the
    window's from its start (its VM preempted then)."""
    return [(row[0], int(row[1])) for row in conn.execute(
        "SELECT t.runs_until, count(*) FROM vm_terms t JOIN gpu_allocations a "
        "ON a.vm_id = t.vm_id WHERE t.runs_until IS NOT NULL AND NOT EXISTS (SELECT 1 "
        # One GPU's windows never overlap: when any meets [now, runs_until], the last one
        # begun by runs_until does.
        "FROM gpu_claims c WHERE c.rowid = (SELECT l.rowid FROM gpu_claims l "
        "WHERE l.host = a.host AND l.gpu_id = a.gpu_id AND l.start_at <= t.runs_until "
        "ORDER BY l.start_at DESC LIMIT 1) AND c.end_at > ?) "
        "GROUP BY t.vm_id ORDER BY t.runs_until", (now,))]
