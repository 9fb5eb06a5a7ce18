"""Which task steps this worker process runs now, held as database leases: RabbitMQ delivers a
message again when the connection it came on drops (the broker restarted) even though its first
delivery still runs, and the second delivery may reach another worker. The lease makes that one
wait instead of running the same step beside it. A process that dies stops renewing; its leases
run out after TTL_S, or at once when it ran on this machine (its PID is gone).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from src.database import leases as lease_dao
from src.database.db import Database
from src.utils.clock import utc_after, utc_now

log = logging.getLogger(__name__)

TTL_S = 30.0
RENEW_S = 10.0
PREFIX = "task:"


class StepLeases:
    def __init__(self, db: Database, holder: str | None = None) -> None:
        self._db = db
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._held: set[str] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, task_id: str) -> bool:
        """Whether this process may run the task's step now (release() once it ran)."""
        with self._guard:
            if task_id in self._held:  # a second delivery to this same process
                return False
            self._held.add(task_id)
        name = PREFIX + task_id
        with self._db.write() as conn:
            current = lease_dao.holder_of(conn, name)
            if current is not None and _died_here(current[0]):
                lease_dao.give_up(conn, name, current[0])
            if lease_dao.take(conn, name, self.holder, utc_now(), utc_after(TTL_S)):
                return True
        with self._guard:
            self._held.discard(task_id)
        return False

    def release(self, task_id: str) -> None:
        with self._db.write() as conn:
            lease_dao.give_up(conn, PREFIX + task_id, self.holder)
        with self._guard:
            self._held.discard(task_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="step-leases",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                with self._guard:
                    names = [PREFIX + task_id for task_id in self._held]
                with self._db.write() as conn:
                    lease_dao.renew(conn, names, self.holder, utc_after(TTL_S))
                    lease_dao.drop_expired(conn, PREFIX, utc_now())
            except Exception:  # the loop must outlive a busy database
                log.exception("renewing step leases failed")


def _died_here(holder: str) -> bool:
    """Whether holder was a process on this machine that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True
    except (OSError, IndexError):
        return False
