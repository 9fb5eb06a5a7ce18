"""Retention: audit rows and finished tasks of deleted VMs are purged once old enough.

Purges run in small batches, each its own short write transaction, so API writes never wait
long behind them, and pause between batches (PACE times as long as the batch took), so a long
backlog never takes the API's CPU for as long as it lasts: a million old tasks purged back to
back slowed every `GET /v1/vms` beside them by half.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from src.database import audit as audit_dao
from src.database import tasks as task_dao
from src.database.db import Database
from src.utils.clock import utc_after

log = logging.getLogger(__name__)

BATCH = 500
DAY_S = 86400
PACE = 3.0  # a purge takes at most a quarter of one CPU while its backlog lasts


class Retention:
    def __init__(self, db: Database, audit_days: int, task_days: int,
                 batch: int = BATCH, pause: Callable[[float], object] | None = None) -> None:
        """pause(seconds) waits between batches; a true answer ends the purge (stopped)."""
        self._db = db
        self._stopped = threading.Event()
        self._pause = pause or self._stopped.wait
        self._audit_days = audit_days
        self._task_days = task_days
        self._batch = batch

    def stop(self) -> None:
        """End a purge under way at its next pause (the rest waits for the next start)."""
        self._stopped.set()

    def purge(self) -> tuple[int, int]:
        """(audit rows, tasks) removed now."""
        audit = self._in_batches(audit_dao.purge_before, utc_after(-self._audit_days * DAY_S))
        tasks = self._in_batches(task_dao.purge_finished_of_deleted_vms,
                                 utc_after(-self._task_days * DAY_S))
        if audit or tasks:
            log.info("retention: purged %d audit row(s) and %d finished task(s)", audit, tasks)
        return audit, tasks

    def _in_batches(self, purge: Callable[[sqlite3.Connection, str, int], int],
                    before: str) -> int:
        total = 0
        while True:
            started = time.monotonic()
            with self._db.write() as conn:
                removed = purge(conn, before, self._batch)
            total += removed
            if removed < self._batch:
                return total
            if self._pause(PACE * (time.monotonic() - started)) or self._stopped.is_set():
                return total
