"""A VM's task steps run in one worker at a time, however often the broker delivers them."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.database import leases as lease_dao
from src.database.db import Database
from src.services.tasks.step_leases import PREFIX, StepLeases, this_process
from src.utils.clock import utc_after


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "iaas.db")
    database.migrate()
    yield database


def here(pid: int) -> str:
    """A holder name for process pid of this machine and PID namespace."""
    host, namespace, _pid, tag = this_process().split(":")
    return f"{host}:{namespace}:{pid}:{tag}"


def test_a_second_delivery_waits_while_the_first_runs_in_this_or_another_worker(
        db: Database) -> None:
    first, other = StepLeases(db, "elsewhere:1:1:a"), StepLeases(db, "elsewhere:1:2:b")
    assert first.acquire("vm:1")
    assert not first.acquire("vm:1")  # the same process got it twice
    assert not other.acquire("vm:1")  # another worker got it
    assert other.acquire("vm:2")  # other VMs are free
    first.release("vm:1")
    assert other.acquire("vm:1")


def test_the_lease_of_a_worker_that_stopped_renewing_runs_out(db: Database) -> None:
    assert StepLeases(db, "elsewhere:1:1:a").acquire("vm:1")
    taker = StepLeases(db, "elsewhere:1:2:b")
    assert not taker.acquire("vm:1")
    with db.write() as conn:  # its renewals stopped TTL_S ago
        conn.execute("UPDATE leases SET expires_at = ?", (utc_after(-1),))
    assert taker.acquire("vm:1")


def test_a_live_worker_on_this_machine_keeps_its_lease(db: Database) -> None:
    alive = subprocess.Popen(["sleep", "30"])
    try:
        assert StepLeases(db, here(alive.pid)).acquire("vm:1")
        assert not StepLeases(db).acquire("vm:1")
    finally:
        alive.kill()
        alive.wait()


def test_the_lease_of_a_dead_worker_on_this_machine_is_taken_at_once(db: Database) -> None:
    zombie = subprocess.Popen(["true"])  # ended, not reaped yet
    time.sleep(0.2)
    assert StepLeases(db, here(zombie.pid)).acquire("vm:1")
    assert StepLeases(db, here(999_999_999)).acquire("vm:2")
    # Another PID namespace's process of the same number is not judged from here.
    assert StepLeases(db, f"{socket.gethostname()}:other-ns:999999999:c").acquire("vm:3")
    taker = StepLeases(db)
    assert taker.acquire("vm:1") and taker.acquire("vm:2")
    assert not taker.acquire("vm:3")
    zombie.wait()
    with db.read() as conn:
        held = lease_dao.holder_of(conn, PREFIX + "vm:1")
    assert held is not None and held[0] == taker.holder



def test_a_step_of_a_vm_whose_last_step_ends_in_this_process_waits_for_it(db: Database) -> None:
    """The VM's last task has ended, its client has asked for the next, and that step's
    thread has yet to let go of the lease: the next waits for it instead of looking again
    LEASE_RETRY_S later; one that outlasts the wait is handed back as before."""
    leases = StepLeases(db, "elsewhere:1:1:a")
    assert leases.acquire("vm:1")
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(leases.acquire("vm:1", 30.0)))
    waiter.start()
    waiter.join(timeout=0.1)
    assert waiter.is_alive() and not got  # still waiting: only the release lets it through
    leases.release("vm:1")
    waiter.join(timeout=30)
    assert got == [True]
    started = time.monotonic()
    assert not leases.acquire("vm:1", 0.2)  # held (by the waiter, now) past the wait
    assert time.monotonic() - started >= 0.2
