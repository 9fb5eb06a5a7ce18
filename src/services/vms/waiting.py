"""VMs that wait for capacity, on the create's side: put in the queue when they fit nowhere,
and removed at once when deleted before they were placed (nothing of them is on any host)."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, replace

from src.database import capacity_waits as wait_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.services.rules.placement import Demand
from src.services.tasks.runner import new_task_row
from src.services.vms.build_record import BuildRecord, asked_networks, waiting_payload
from src.utils.clock import utc_now
from src.vocabulary import QUEUE_EXECUTOR

UNPLACED = ""  # the host of a VM that was never placed (it waits, or its wait expired)
CANCELLED = ("cancelled", "The VM was deleted while it waited for capacity; nothing was made.")
# A placement shortfall's stage, as what a waiting VM waits for.
REASON_OF = {"enabled": "host", "up": "host"}


def reason_of(resource: str) -> str:
    return REASON_OF.get(resource, resource)


def enqueue(conn: sqlite3.Connection, row: vm_dao.VmRow, task: task_dao.TaskRow,
            demand: Demand, record: BuildRecord, reason: str, pinned: str | None,
            expires_at: str) -> tuple[vm_dao.VmRow, task_dao.TaskRow]:
    """Inside the create's transaction: the VM row (queued, holding nothing), its create task
    (queued for no executor) and its place in the queue. Returns the row and task inserted."""
    row = replace(row, status="queued", host=UNPLACED, numa_node=None, pinned_cpus=[], gpus=[])
    payload = waiting_payload(record)
    task = replace(task, executor=QUEUE_EXECUTOR, host=None, payload=json.dumps(payload))
    vm_dao.insert(conn, row)
    vm_dao.release_resources(conn, row.id)  # it holds nothing while it waits
    task_dao.insert(conn, task)
    wait_dao.insert(conn, wait_dao.WaitRow(
        vm_id=row.id, task_id=task.id, project=row.project, since=row.created_at,
        expires_at=expires_at, reason=reason_of(reason), demand=asdict(demand),
        pinned_host=pinned, networks=asked_networks(payload)))
    return row, task


def remove_unplaced(db: Database, row: vm_dao.VmRow,
                    request_id: str | None) -> task_dao.TaskRow | None:
    """Delete a VM that was never placed (it waits, or waited and expired): its row goes at
    once, its create ends cancelled. Returns the delete task (already succeeded), or None when
    the VM was placed meanwhile (its delete then goes the usual way)."""
    now = utc_now()
    delete = replace(new_task_row(row.id, "delete", request_id, row.project),
                     status="succeeded", started_at=now, finished_at=now,
                     executor=QUEUE_EXECUTOR)
    with db.write() as conn:
        current = vm_dao.get(conn, row.id)
        if current is None or current.host != UNPLACED:
            return None
        wait = wait_dao.get(conn, row.id)
        if wait is not None:
            task_dao.finish(conn, wait.task_id, now, CANCELLED)
            wait_dao.delete(conn, row.id)
        volume_dao.drop_pending(conn, row.id)
        vm_dao.delete(conn, row.id)
        task_dao.insert(conn, delete)
    return delete
