"""Wake the API's long-polls soon after a Celery worker ends a task: the workers are other
processes, so nothing in this one notifies the waiters. A connection kept open reads SQLite's
data_version, which changes whenever another connection commits; a change wakes the waiters
(who re-read their task), so a wait ends within one tick instead of one poll period.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from src.database.db import Database

log = logging.getLogger(__name__)

TICK_S = 0.02


class ChangeWatcher:
    def __init__(self, db: Database, on_change: Callable[[], None]) -> None:
        self._db = db
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="change-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        read, close = self._db.commit_counter()
        try:
            seen = read()
            while not self._stop.wait(TICK_S):
                try:
                    now = read()
                except sqlite3.Error:  # a busy database: look again next tick
                    log.debug("data_version unreadable", exc_info=True)
                    continue
                if now != seen:
                    seen = now
                    try:
                        self._on_change()
                    except sqlite3.Error:  # the waiters poll meanwhile; the next change wakes
                        log.debug("change not handed on", exc_info=True)
        finally:
            close()
