"""Stops the platform asks for on a reservation's behalf: a VM on GPUs a reservation claims
from now on (preempted), or a VM of a reservation that ended. Such a stop gives the VM's GPUs
back once it has stopped (vm_terms.released_gpus remembers them); the VM's next start takes
them again only where capacity allows. A VM is stopped, never deleted: it keeps its disks."""
from __future__ import annotations

import sqlite3
from dataclasses import replace

from src import errors
from src.database import gpus as gpu_dao
from src.database import reservations as reservation_dao
from src.database import tasks as task_dao
from src.database import vm_terms as terms_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services.rules import lifecycle, windows
from src.services.tasks.runner import Executor, new_task_row
from src.utils.clock import utc_now
from src.vocabulary import NOTICE, PREEMPTION_NOTICE


def stop_for(db: Database, executor: Executor, vm_id: str, reason: str) -> bool:
    """Ask for the VM's stop, with reason in its history; True once asked (or done). A VM busy
    with another task is left for the next look; one already stopped gives its GPUs back now."""
    with db.write() as conn:
        row = vm_dao.get(conn, vm_id)
        if row is None or task_dao.active_for_vm(conn, vm_id) is not None:
            return False
        now = utc_now()
        task = replace(new_task_row(vm_id, "stop", None, row.project, row.host),
                       executor=executor.name, payload='{"args": {}}', reason=reason)
        if "stop" not in lifecycle.allowed_actions(row.status, busy=False, domain_exists=True):
            # Nothing runs (stopped, error): its GPUs go back at once, said in its history.
            task_dao.insert(conn, replace(task, status="succeeded", started_at=now,
                                          finished_at=now, payload="{}"))
            release(conn, vm_id)
            return True
        task_dao.insert(conn, task)
    executor.submit(task)
    return True


def notify(conn: sqlite3.Connection, vm_id: str, reservation_id: str, start: str,
           now: str) -> None:
    """A finished notice in the VM's history: a reservation claims its GPUs from start, when
    it is stopped (never deleted)."""
    row = vm_dao.get(conn, vm_id)
    if row is None:
        return
    task_dao.insert(conn, replace(
        new_task_row(vm_id, NOTICE, None, row.project, row.host), status="succeeded",
        started_at=now, finished_at=now, payload="{}",
        reason=PREEMPTION_NOTICE.format(reservation=reservation_id, start=windows.shown(start))))


def notify_landing(conn: sqlite3.Connection, vm_id: str, host: str, gpu_ids: list[str],
                   own: str | None, now: str) -> None:
    """A VM placed on GPUs a reservation (not its own) claims later gets its notice now."""
    if not gpu_ids:
        return
    first = reservation_dao.first_claim_after(conn, host, gpu_ids, now, own)
    if first is not None:
        notify(conn, vm_id, first[0], first[1], now)


def noticed(conn: sqlite3.Connection, vm_id: str, reservation_id: str) -> bool:
    """Whether the VM's history holds a notice of that reservation (only then is it stopped
    for it)."""
    prefix = PREEMPTION_NOTICE.format(reservation=reservation_id, start="")
    return task_dao.has_reason(conn, vm_id, NOTICE, prefix)


def release(conn: sqlite3.Connection, vm_id: str) -> None:
    """The VM's GPUs go back to the ledger; its next start takes them again."""
    held = [gpu.id for gpu in gpu_dao.for_vm(conn, vm_id)]
    if not held:
        return
    terms = terms_dao.get(conn, vm_id)
    terms_dao.put(conn, replace(terms, released_gpus=sorted({*terms.released_gpus, *held})))
    conn.execute("DELETE FROM gpu_allocations WHERE vm_id = ?", (vm_id,))


def after_stop(db: Database, task: task_dao.TaskRow) -> bool:
    """A stop the platform asked for ended: True when it gave GPUs back."""
    if task.action != "stop" or task.reason is None or task.status != "succeeded":
        return False
    with db.write() as conn:
        if not gpu_dao.for_vm(conn, task.vm_id or ""):
            return False
        release(conn, task.vm_id or "")
    return True


def retake(conn: sqlite3.Connection, row: vm_dao.VmRow) -> None:
    """Before a start: a VM whose GPUs a stop gave back takes them again, inside the start's
    transaction, when nobody holds them and no reservation but its own claims them now.

    Raises: InsufficientCapacity (gpu) when they are taken.
    """
    terms = terms_dao.get(conn, row.id)
    if not terms.released_gpus:
        return
    now = utc_now()
    claims = reservation_dao.claims_from(conn, now)
    held = {gpu.id for gpu in gpu_dao.list_all(conn, row.host) if gpu.vm_id is not None}
    taken = [gpu for gpu in terms.released_gpus if gpu in held or any(
        claim.start_at <= now and claim.reservation_id != terms.reservation_id
        for claim in claims.get((row.host, gpu), ()))]
    if taken:
        raise errors.InsufficientCapacity(
            f"The GPUs this VM had ({', '.join(taken)}) are taken now (a reservation, or "
            "another VM); it can start again once they are free.",
            resource="gpu", requested=len(terms.released_gpus),
            available=len(terms.released_gpus) - len(taken))
    gpu_dao.allocate(conn, row.host, terms.released_gpus, row.id, now)
    # Booked meanwhile for later: it is told again, as a VM that lands on claimed GPUs is.
    notify_landing(conn, row.id, row.host, terms.released_gpus, terms.reservation_id, now)
    terms_dao.put(conn, replace(terms, released_gpus=[]))


def preempt_at(conn: sqlite3.Connection, rows: list[vm_dao.VmRow]) -> dict[str, str]:
    """When each VM on GPUs that a reservation (not its own) claims will be stopped: the
    claim's start. VMs that are not are absent."""
    if not any(row.gpus for row in rows):
        return {}
    claims = reservation_dao.claims_on_held(conn, utc_now())
    terms = terms_dao.of_vms(conn, [row.id for row in rows if row.gpus])
    found = {}
    for row in rows:
        own = terms[row.id].reservation_id if row.id in terms else None
        starts = [claim.start_at for gpu in row.gpus for claim in claims.get((row.host, gpu), ())
                  if claim.reservation_id != own]
        if starts:
            found[row.id] = min(starts)
    return found
