"""Which VMs (and image imports) this worker process runs a task step for now, held as database
leases. RabbitMQ delivers a message again when the connection it came on drops (the broker
restarted) even though its first delivery still runs, and the second delivery may reach another
worker; and a task failed by its deadline may still run when the VM's next task arrives. The
lease makes the later one wait instead of running beside it, as the embedded runner's per-VM
lock does. A process that dies stops renewing; its leases run out after TTL_S, or at once when
it ran on this machine (its PID is gone).
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from pathlib import Path

from src.database import leases as lease_dao
from src.database.db import BUSY_TIMEOUT_S, Database
from src.utils.clock import utc_after, utc_now

log = logging.getLogger(__name__)

TTL_S = 3 * BUSY_TIMEOUT_S  # a renewal stuck behind a busy database never lets a lease lapse
RENEW_S = 20.0
PREFIX = "step:"


def this_process() -> str:
    """A holder name no other process has, even one in another PID namespace: host, PID
    namespace, PID and a random tag."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        namespace = "?"
    return f"{socket.gethostname()}:{namespace}:{os.getpid()}:{secrets.token_hex(4)}"


class StepLeases:
    def __init__(self, db: Database, holder: str | None = None) -> None:
        self._db = db
        self.holder = holder or this_process()
        self._held: set[str] = set()
        self._guard = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, key: str, local_wait_s: float = 0.0) -> bool:
        """Whether this process may run a step for key (a VM's or an import's) now; release()
        once it ran. While another thread of this process holds key, wait up to local_wait_s
        for it: that is most often the VM's last task, ended but not yet released, whose
        client has asked for the next already."""
        with self._guard:
            if not self._guard.wait_for(lambda: key not in self._held, local_wait_s):
                return False  # another delivery runs in this same process
            self._held.add(key)
        try:
            with self._db.write() as conn:
                current = lease_dao.holder_of(conn, PREFIX + key)
                if current is not None and _died_here(current[0]):
                    lease_dao.give_up(conn, PREFIX + key, current[0])
                if lease_dao.take(conn, PREFIX + key, self.holder, utc_now(), utc_after(TTL_S)):
                    return True
        except BaseException:
            self._forget(key)
            raise
        self._forget(key)
        return False

    def release(self, key: str) -> None:
        try:
            with self._db.write() as conn:
                lease_dao.give_up(conn, PREFIX + key, self.holder)
        finally:  # never renewed again, whatever the database said
            self._forget(key)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="step-leases",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _forget(self, key: str) -> None:
        with self._guard:
            self._held.discard(key)
            self._guard.notify_all()

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                with self._guard:
                    names = [PREFIX + key for key in self._held]
                with self._db.write() as conn:
                    lease_dao.renew(conn, names, self.holder, utc_after(TTL_S))
                    lease_dao.drop_expired(conn, PREFIX, utc_now())
            except Exception:  # the loop must outlive a busy database
                log.exception("renewing step leases failed")


def _died_here(holder: str) -> bool:
    """Whether holder was a process of this machine's PID namespace that no longer runs."""
    host, namespace, pid, _tag = ([*holder.split(":"), "", "", ""])[:4]
    mine = this_process().split(":")
    if (host, namespace) != (mine[0], mine[1]) or not pid.isdigit():
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True
    except (OSError, IndexError):
        return False
