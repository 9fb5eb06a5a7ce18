"""Tables that would only grow: retention purges, indexed hot queries, no anonymous writes."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from src.app import App
from src.database import audit as audit_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.services.actions.retention import Retention
from src.utils.clock import utc_after, utc_now
from tests.support import Client

DAY_S = 86400
WATCHED = ("tasks", "vms", "audit_events", "t", "v")  # the tables, and their aliases in the DAOs


def _task(conn: sqlite3.Connection, vm_id: str, status: str, age_days: float) -> None:
    at = utc_after(-age_days * DAY_S)
    finished = at if status in ("succeeded", "failed") else None
    conn.execute("INSERT INTO tasks (id, vm_id, action, status, created_at, finished_at) "
                 "VALUES (lower(hex(randomblob(16))), ?, 'stop', ?, ?, ?)",
                 (vm_id, status, at, finished))


def test_the_sweep_purges_old_audit_rows_and_old_tasks_of_deleted_vms(
        app: App, client: Client, base_image: dict[str, Any]) -> None:
    live = client.post("/v1/vms", {"name": "live", "cpu": 1, "ram": 128,
                                   "image_name": "base"}).body
    client.wait_task(live["task"]["id"])
    with app.db.write() as conn:
        for _ in range(1200):  # more than two batches
            conn.execute("INSERT INTO audit_events (at, method, path, status, request_id) "
                         "VALUES (?, 'POST', '/v1/vms', 202, 'req-old')",
                         (utc_after(-91 * DAY_S),))
            _task(conn, "gone-vm", "succeeded", 31)
        _task(conn, "gone-vm", "failed", 29)  # too young
        _task(conn, live["id"], "succeeded", 400)  # its VM still exists: its history stays
    app.reconciler.sweep()
    with app.db.read() as conn:
        old_audit = conn.execute("SELECT count(*) FROM audit_events WHERE request_id = 'req-old'")
        assert old_audit.fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] > 0  # recent
        left = {(row[0], row[1]) for row in conn.execute("SELECT vm_id, status FROM tasks")}
    assert ("gone-vm", "failed") in left and ("gone-vm", "succeeded") not in left
    assert (live["id"], "succeeded") in left


def test_purges_go_in_small_batches(app: App) -> None:
    with app.db.write() as conn:
        for _ in range(25):
            _task(conn, "gone", "succeeded", 60)
    batches: list[int] = []

    def counting(conn: sqlite3.Connection, before: str, batch: int) -> int:
        removed = task_dao.purge_finished_of_deleted_vms(conn, before, batch)
        batches.append(removed)
        return removed

    pauses: list[float] = []
    retention = Retention(app.db, 90, 30, batch=10, pause=pauses.append)
    assert retention._in_batches(counting, utc_after(-30 * DAY_S)) == 25
    assert batches == [10, 10, 5]
    # After each full batch the purge steps aside for PACE times as long as the batch took.
    assert len(pauses) == 2 and all(pause > 0 for pause in pauses)


class _Recorder:
    """Runs the DAO's statements and keeps each (sql, params) to explain it afterwards."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        self.statements.append((sql, tuple(params)))
        return self.conn.execute(sql, params)


HOT: dict[str, Callable[[Any], object]] = {
    "active tasks": task_dao.active_by_vm,
    "active task of a VM": lambda c: task_dao.active_for_vm(c, "some-vm"),
    "interrupted tasks": task_dao.list_active,
    "overdue tasks": lambda c: task_dao.overdue(c, utc_now()),
    "list": lambda c: vm_dao.list_page(c, status=None, name=None, after=None, limit=1000),
    "list of a project": lambda c: vm_dao.list_page(c, status=None, name=None, after=None,
                                                    limit=1000, project="team-a"),
    "metrics: vms": vm_dao.count_by_status,
    "metrics: tasks": task_dao.count_by_action_and_status,
    "retention: tasks": lambda c: task_dao.purge_finished_of_deleted_vms(c, utc_now(), 500),
    "retention: audit": lambda c: audit_dao.purge_before(c, utc_now(), 500),
}


@pytest.mark.parametrize("name", HOT)
def test_hot_queries_scan_no_table(app: App, name: str) -> None:
    with app.db.write() as conn:
        recorder = _Recorder(conn)
        HOT[name](recorder)
        plans = [" / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
                 for sql, params in recorder.statements]
    for plan in plans:
        full_scans = [step for step in plan.split(" / ") if step.split()[0] == "SCAN"
                      and step.split()[1] in WATCHED and "USING" not in step]
        assert not full_scans, f"{name}: {plan}"


def test_a_stopped_purge_ends_at_its_next_pause(app: App) -> None:
    """Shutting down does not wait for a long backlog: the purge ends between two batches."""
    with app.db.write() as conn:
        for _ in range(25):
            _task(conn, "gone", "succeeded", 60)
    retention = Retention(app.db, 90, 30, batch=10)
    retention.stop()
    assert retention._in_batches(task_dao.purge_finished_of_deleted_vms,
                                 utc_after(-30 * DAY_S)) == 10
