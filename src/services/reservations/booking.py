"""Booking, reading and cancelling reservations. A booking decision runs in one BEGIN
IMMEDIATE transaction over the ledger of claimed windows (gpu_claims), so of racing bookings of
the last GPUs exactly those that fit are made; the table's trigger backs it."""
from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from src import errors
from src.database import flavors as flavor_dao
from src.database import gpus as gpu_dao
from src.database import partitions as partition_dao
from src.database import projects as project_dao
from src.database import reservations as reservation_dao
from src.database import vm_terms as terms_dao
from src.database.db import Database
from src.services.rules import access, gpu_ledger, windows
from src.services.rules.access import Principal
from src.services.vms import preemption
from src.utils.clock import seconds_between, utc_now
from src.vocabulary import OPEN_RESERVATION


@dataclass(frozen=True)
class ReservationView:
    row: reservation_dao.ReservationRow
    claims: list[reservation_dao.ClaimRow]
    vms: int  # VMs created in it


@dataclass(frozen=True)
class Booking:
    """A validated POST /v1/reservations body."""

    flavor: str
    count: int
    start: str
    end: str
    project: str | None = None


def _ledger(conn: sqlite3.Connection, model: str | None, start: str, end: str,
            every_window: bool = False) -> gpu_ledger.Ledger:
    """Every assignable GPU of the model, the windows claimed on each that meet [start, end)
    (every_window: all those not over by start, as a conflict's offer needs), and those in
    use."""
    gpus: dict[str, list[str]] = {}
    in_use = set(partition_dao.gpus_split(conn))  # a GPU split in partitions is in use
    for host, gpu, held in gpu_dao.assignable(conn, model):
        gpus.setdefault(host, []).append(gpu)
        if held:
            in_use.add((host, gpu))
    claimed = reservation_dao.windows_from(conn, start) if every_window else \
        reservation_dao.windows_meeting(conn, start, end)
    kept = reservation_dao.kept_from_bookings(conn, utc_now()) | partition_dao.gpus_split(conn)
    return gpu_ledger.Ledger(gpus, claimed, frozenset(in_use), frozenset(kept))


def _check_quota(conn: sqlite3.Connection, project: str, wanted: int, start: str,
                 end: str) -> None:
    """The project's gpus quota holds what its VMs hold now (those of its reservations
    aside), its reservations that meet the window and this one. Raises: QuotaExceeded."""
    limit = (project_dao.limits(conn, project) or {}).get("gpus")
    if limit is None:
        return
    own_vms = conn.execute(
        "SELECT count(*) FROM gpu_allocations a JOIN vms v ON v.id = a.vm_id "
        "LEFT JOIN vm_terms t ON t.vm_id = v.id WHERE v.project = ? "
        "AND t.reservation_id IS NULL", (project,)).fetchone()[0]
    booked = sum(row.count * row.gpus_per_vm
                 for row in reservation_dao.overlapping(conn, project, start, end)
                 if row.status in OPEN_RESERVATION)
    if own_vms + booked + wanted > limit:
        raise errors.QuotaExceeded(resource="gpus", limit=limit, in_use=own_vms + booked,
                                   requested=wanted)


def _notify_holders(conn: sqlite3.Connection, row: reservation_dao.ReservationRow,
                    claimed: set[tuple[str, str]], now: str) -> None:
    """A notice in the history of each VM on a GPU the booking claimed (preemptible ones, or
    those that landed on claimed GPUs): it is stopped at the window's start."""
    held = gpu_dao.holders(conn)
    holders = {held[gpu] for gpu in claimed if gpu in held}
    for vm_id in sorted(holders):
        preemption.notify(conn, vm_id, row.id, row.start_at, now)


class ReservationService:
    def __init__(self, db: Database, horizon_days: int,
                 on_change: Callable[[], object] = lambda: None) -> None:
        """on_change: a reservation was made or cancelled (the clock looks now)."""
        self._db = db
        self._horizon_days = horizon_days
        self._on_change = on_change

    def create(self, booking: Booking, caller: Principal) -> ReservationView:
        """Book booking.count VMs of a GPU flavor for [start, end).

        Raises: Forbidden (project, for members), ProjectNotFound, FlavorNotFoundInRequest,
        FlavorWithoutGpus, ReservationBadTime, ReservationInPast, ReservationEndBeforeStart,
        ReservationTooFar, QuotaExceeded (gpus), ReservationConflict (with next_start).
        """
        project = booking.project or caller.project
        if project != caller.project:
            access.require_admin(caller)
        now = utc_now()
        start, end = windows.window(booking.start, booking.end, now, self._horizon_days)
        with self._db.write() as conn:
            if not project_dao.exists(conn, project):
                raise errors.ProjectNotFound(project=project)
            flavor = flavor_dao.get(conn, booking.flavor)
            if flavor is None:
                raise errors.FlavorNotFoundInRequest(flavor=booking.flavor)
            if flavor.gpu_count < 1:
                raise errors.FlavorWithoutGpus(flavor=flavor.name)
            wanted = booking.count * flavor.gpu_count
            _check_quota(conn, project, wanted, start, end)
            ledger = _ledger(conn, flavor.gpu_model, start, end)
            # A window that starts now never takes GPUs VMs use: it would stop them at once.
            slots = gpu_ledger.pick(ledger, booking.count, flavor.gpu_count, start, end,
                                    spare_in_use=start <= now)
            if slots is None:
                ledger = _ledger(conn, flavor.gpu_model, start, end, every_window=True)
                later = gpu_ledger.next_start(ledger, booking.count, flavor.gpu_count, start,
                                              seconds_between(start, end))
                raise errors.ReservationConflict(
                    f"{booking.count} VM(s) of {flavor.name!r} ({wanted} GPUs) do not fit for "
                    "the whole window; " + (f"the same window fits from {windows.shown(later)}."
                                            if later else "no window of that length ever "
                                            "fits on these hosts."),
                    flavor=flavor.name, count=booking.count,
                    next_start=windows.shown(later) if later else None)
            row = reservation_dao.ReservationRow(
                id=str(uuid.uuid4()), project=project, flavor_id=flavor.id,
                flavor_name=flavor.name, count=booking.count, gpus_per_vm=flavor.gpu_count,
                start_at=start, end_at=end, status="pending", created_at=now)
            reservation_dao.insert(conn, row, [
                reservation_dao.ClaimRow(row.id, slot.host, slot.gpu_id, slot.slot, start, end)
                for slot in slots])
            _notify_holders(conn, row, {(slot.host, slot.gpu_id) for slot in slots}, now)
        self._on_change()
        return self.show(row.id, caller)

    def list(self, caller: Principal) -> list[ReservationView]:
        """The caller's project's reservations (admins: every project's), by start."""
        with self._db.read() as conn:
            rows = reservation_dao.list_all(conn, access.scope(caller))
            return [self._view(conn, row) for row in rows]

    def show(self, reservation_id: str, caller: Principal) -> ReservationView:
        """Raises: ReservationNotFound (also for another project's)."""
        with self._db.read() as conn:
            row = reservation_dao.get(conn, reservation_id, access.scope(caller))
            if row is None:
                raise errors.ReservationNotFound(reservation=reservation_id)
            return self._view(conn, row)

    def cancel(self, reservation_id: str, caller: Principal) -> ReservationView:
        """A pending reservation ends at once; an active one gives its GPUs back from now and
        its VMs are stopped as at its end (by the clock, at once).

        Raises: ReservationNotFound, ReservationClosed (ended or cancelled already).
        """
        with self._db.write() as conn:
            row = reservation_dao.get(conn, reservation_id, access.scope(caller))
            if row is None:
                raise errors.ReservationNotFound(reservation=reservation_id)
            if not reservation_dao.set_status(conn, row.id, "cancelled", OPEN_RESERVATION):
                raise errors.ReservationClosed(reservation=row.id, status=row.status)
            reservation_dao.end_claims(conn, row.id, utc_now())
        self._on_change()
        return self.show(reservation_id, caller)

    @staticmethod
    def _view(conn: sqlite3.Connection, row: reservation_dao.ReservationRow) -> ReservationView:
        return ReservationView(row, reservation_dao.claims_of(conn, row.id),
                               terms_dao.count_bound(conn, row.id))


def hosts_of(claims: list[reservation_dao.ClaimRow]) -> list[dict[str, Any]]:
    """The claimed GPUs by host, as the API shows them."""
    by_host: dict[str, list[str]] = {}
    for claim in claims:
        by_host.setdefault(claim.host, []).append(claim.gpu_id)
    return [{"host": host, "gpus": sorted(gpus)} for host, gpus in sorted(by_host.items())]
