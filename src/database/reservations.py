"""DAO for reservations and their ledger of claimed GPUs (gpu_claims)."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class ReservationRow:
    id: str
    project: str
    flavor_id: str
    flavor_name: str
    count: int
    gpus_per_vm: int
    start_at: str
    end_at: str
    status: str  # the clock's progress: pending, active, ended; or cancelled
    created_at: str


@dataclass(frozen=True)
class ClaimRow:
    reservation_id: str
    host: str
    gpu_id: str
    slot: int
    start_at: str
    end_at: str
    project: str = ""  # the reservation's, joined in


_COLUMNS = ("id, project, flavor_id, flavor_name, count, gpus_per_vm, start_at, end_at, status, "
            "created_at")
_CLAIMS = ("SELECT c.reservation_id, c.host, c.gpu_id, c.slot, c.start_at, c.end_at, r.project "
           "FROM gpu_claims c JOIN reservations r ON r.id = c.reservation_id")


def insert(conn: sqlite3.Connection, row: ReservationRow, claims: list[ClaimRow]) -> None:
    """Raises: sqlite3.IntegrityError when a claim overlaps another of its GPU (the trigger)."""
    conn.execute(f"INSERT INTO reservations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (row.id, row.project, row.flavor_id, row.flavor_name, row.count,
                  row.gpus_per_vm, row.start_at, row.end_at, row.status, row.created_at))
    conn.executemany("INSERT INTO gpu_claims (reservation_id, host, gpu_id, slot, start_at, "
                     "end_at) VALUES (?, ?, ?, ?, ?, ?)",
                     [(claim.reservation_id, claim.host, claim.gpu_id, claim.slot,
                       claim.start_at, claim.end_at) for claim in claims])


def get(conn: sqlite3.Connection, reservation_id: str,
        project: str | None = None) -> ReservationRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM reservations WHERE id = ? "
                       "AND (? IS NULL OR project = ?)",
                       (reservation_id, project, project)).fetchone()
    return ReservationRow(*row) if row else None


def list_all(conn: sqlite3.Connection, project: str | None = None) -> list[ReservationRow]:
    """Every reservation (or a project's), by start."""
    return [ReservationRow(*row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM reservations WHERE ? IS NULL OR project = ? "
        "ORDER BY start_at, id", (project, project))]


def open_ones(conn: sqlite3.Connection) -> list[ReservationRow]:
    """Those whose start or end the clock has yet to enforce (pending or active)."""
    return [ReservationRow(*row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM reservations WHERE status IN ('pending', 'active') "
        "ORDER BY start_at, id")]


def overlapping(conn: sqlite3.Connection, project: str, start: str,
                end: str) -> list[ReservationRow]:
    """The project's reservations not cancelled whose window meets [start, end)."""
    return [ReservationRow(*row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM reservations WHERE project = ? AND status != 'cancelled' "
        "AND start_at < ? AND ? < end_at", (project, end, start))]


def set_status(conn: sqlite3.Connection, reservation_id: str, status: str,
               only_from: tuple[str, ...]) -> bool:
    marks = ", ".join("?" for _ in only_from)
    return conn.execute(f"UPDATE reservations SET status = ? WHERE id = ? AND status IN ({marks})",
                        (status, reservation_id, *only_from)).rowcount == 1


def end_claims(conn: sqlite3.Connection, reservation_id: str, now: str) -> None:
    """The reservation's GPUs go back from now on (it was cancelled): shorter claims, or none
    for a window that had not begun."""
    conn.execute("DELETE FROM gpu_claims WHERE reservation_id = ? AND start_at >= ?",
                 (reservation_id, now))
    conn.execute("UPDATE gpu_claims SET end_at = ? WHERE reservation_id = ? AND end_at > ?",
                 (now, reservation_id, now))


def claims_of(conn: sqlite3.Connection, reservation_id: str) -> list[ClaimRow]:
    return [ClaimRow(*row) for row in conn.execute(
        _CLAIMS + " WHERE c.reservation_id = ? ORDER BY c.slot, c.host, c.gpu_id",
        (reservation_id,))]


def claims_meeting(conn: sqlite3.Connection, start: str, end: str) -> list[ClaimRow]:
    """Every claim whose window meets [start, end), with its reservation's project."""
    return [ClaimRow(*row) for row in conn.execute(
        _CLAIMS + " WHERE c.end_at > ? AND c.start_at < ?", (start, end))]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM reservations").fetchone()[0])


def claims_from(conn: sqlite3.Connection, now: str) -> dict[tuple[str, str], list[ClaimRow]]:
    """Every claim not over by now, by GPU (host, PCI address), earliest first."""
    found: dict[tuple[str, str], list[ClaimRow]] = {}
    for row in conn.execute(_CLAIMS + " WHERE c.end_at > ? ORDER BY c.start_at", (now,)):
        claim = ClaimRow(*row)
        found.setdefault((claim.host, claim.gpu_id), []).append(claim)
    return found


def gpus_reserved_now(conn: sqlite3.Connection, project: str, now: str) -> int:
    """The GPUs the project's open reservations hold at now beyond what their own VMs use
    (those count as the VMs' own): what the gpus quota counts for them."""
    return int(conn.execute(
        "SELECT coalesce(sum(max(0, r.count * r.gpus_per_vm - (SELECT count(*) FROM "
        "gpu_allocations a JOIN vm_terms t ON t.vm_id = a.vm_id "
        "WHERE t.reservation_id = r.id))), 0) FROM reservations r WHERE r.project = ? "
        "AND r.status IN ('pending', 'active') AND r.start_at <= ? AND ? < r.end_at",
        (project, now, now)).fetchone()[0])


def windows_meeting(conn: sqlite3.Connection, start: str,
                    end: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """By GPU, the window claimed on it that meets [start, end), if any: per GPU only the last
    claim that starts before end is looked at (one GPU's claims never overlap, so when that one
    is over by start, every earlier one is too), one index step per GPU whatever the ledger."""
    return {(host, gpu): [(begins, ends)] for host, gpu, begins, ends in conn.execute(
        "SELECT c.host, c.gpu_id, c.start_at, c.end_at FROM gpus g JOIN gpu_claims c "
        "ON c.rowid = (SELECT l.rowid FROM gpu_claims l WHERE l.host = g.host "
        "AND l.gpu_id = g.id AND l.start_at < ? ORDER BY l.start_at DESC LIMIT 1) "
        "WHERE c.end_at > ?", (end, start))}


def windows_from(conn: sqlite3.Connection, now: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """By GPU, every window claimed on it not over by now, earliest first (plain tuples: a
    conflict's offer sweeps them all)."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    # No ORDER BY: sorting by GPU would walk the whole ledger in gpu_claims_gpu's order; the
    # end index (migration 026) reads only the windows not over, sorted here.
    for host, gpu, begins, ends in conn.execute(
            "SELECT host, gpu_id, start_at, end_at FROM gpu_claims WHERE end_at > ?", (now,)):
        found.setdefault((host, gpu), []).append((begins, ends))
    for windows in found.values():
        windows.sort()
    return found


def kept_from_bookings(conn: sqlite3.Connection, now: str) -> set[tuple[str, str]]:
    """The GPUs no booking may take: held whole by a VM that did not say preemptible, runs in
    no reservation and did not land on a claimed GPU (no claim on it is open), or split into
    partitions (their VMs are never preempted)."""
    kept = {(host, gpu) for host, gpu in conn.execute(
        "SELECT a.host, a.gpu_id FROM gpu_allocations a LEFT JOIN vm_terms t "
        "ON t.vm_id = a.vm_id WHERE coalesce(t.preemptible, 0) = 0 "
        "AND t.reservation_id IS NULL AND NOT EXISTS (SELECT 1 FROM gpu_claims c "
        "WHERE c.host = a.host AND c.gpu_id = a.gpu_id AND c.end_at > ?)", (now,))}
    return kept


def first_claim_after(conn: sqlite3.Connection, host: str, gpu_ids: list[str], now: str,
                      own: str | None) -> tuple[str, str] | None:
    """(reservation, start) of the earliest claim not yet begun on any of these GPUs that is
    not the VM's own reservation's, if any."""
    marks = ", ".join("?" for _ in gpu_ids)
    row = conn.execute(
        f"SELECT reservation_id, start_at FROM gpu_claims WHERE host = ? AND gpu_id IN ({marks}) "
        "AND start_at > ? AND reservation_id IS NOT ? ORDER BY start_at LIMIT 1",
        (host, *gpu_ids, now, own)).fetchone()
    return (row[0], row[1]) if row else None


def ends_of_running(conn: sqlite3.Connection, now: str) -> list[tuple[str, int]]:
    """(end, how many GPUs then) of the claims whose window runs at now, earliest first."""
    return [(end, int(count)) for end, count in conn.execute(
        "SELECT end_at, count(*) FROM gpu_claims WHERE end_at > ? AND start_at <= ? "
        "GROUP BY end_at ORDER BY end_at", (now, now))]


def claims_on_held(conn: sqlite3.Connection, now: str) -> dict[tuple[str, str], list[ClaimRow]]:
    """The claims not over by now on GPUs some VM holds, by GPU, earliest first (what a VM's
    preempt_at is read from: a few, however long the ledger)."""
    found: dict[tuple[str, str], list[ClaimRow]] = {}
    for row in conn.execute(
            _CLAIMS + " JOIN gpu_allocations a ON a.host = c.host AND a.gpu_id = c.gpu_id "
            "WHERE c.end_at > ? ORDER BY c.start_at", (now,)):
        claim = ClaimRow(*row)
        found.setdefault((claim.host, claim.gpu_id), []).append(claim)
    return found


def claimed_at(conn: sqlite3.Connection, at: str) -> dict[tuple[str, str], str]:
    """The GPUs some window claims at `at`, with the reservation claiming each."""
    return {(host, gpu): reservation for host, gpu, reservation in conn.execute(
        "SELECT host, gpu_id, reservation_id FROM gpu_claims WHERE end_at > ? AND start_at <= ?",
        (at, at))}


def claimed_after(conn: sqlite3.Connection, at: str,
                  besides: str | None) -> set[tuple[str, str]]:
    """The GPUs a window that begins after `at` claims, that of reservation besides aside."""
    # Such a window ends after `at` too: the end index (migration 026) reads only the windows
    # not over, where DISTINCT walked the whole ledger in gpu_claims_gpu's order (every
    # GET /v1/gpus and every placement on GPUs read this).
    return {(host, gpu) for host, gpu in conn.execute(
        "SELECT host, gpu_id FROM gpu_claims WHERE end_at > ? AND start_at > ? "
        "AND reservation_id IS NOT ?", (at, at, besides))}


def due(conn: sqlite3.Connection, now: str) -> list[ReservationRow]:
    """The open reservations whose start or end the clock must enforce at now: those pending
    whose window has begun, and those whose window is over (the partial index keeps the scan
    to open ones; a ledger of thousands booked ahead costs a few index steps)."""
    return [ReservationRow(*row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM reservations WHERE status IN ('pending', 'active') "
        "AND start_at <= ? AND (status = 'pending' OR end_at <= ?) ORDER BY start_at, id",
        (now, now))]
