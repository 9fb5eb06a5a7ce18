"""A task's step runs in one worker at a time, however often the broker delivers it."""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.database import leases as lease_dao
from src.database.db import Database
from src.services.step_leases import PREFIX, StepLeases
from src.utils.clock import utc_after


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "iaas.db")
    database.migrate()
    yield database


def test_a_second_delivery_waits_while_the_first_runs_in_this_or_another_worker(
        db: Database) -> None:
    first, other = StepLeases(db, "elsewhere:1"), StepLeases(db, "elsewhere:2")
    assert first.acquire("t1")
    assert not first.acquire("t1")  # the same process got it twice
    assert not other.acquire("t1")  # another worker got it
    assert other.acquire("t2")  # other tasks are free
    first.release("t1")
    assert other.acquire("t1")


def test_the_lease_of_a_worker_that_stopped_renewing_runs_out(db: Database) -> None:
    assert StepLeases(db, "elsewhere:1").acquire("t1")
    taker = StepLeases(db, "elsewhere:2")
    assert not taker.acquire("t1")
    with db.write() as conn:  # its renewals stopped TTL_S ago
        conn.execute("UPDATE leases SET expires_at = ?", (utc_after(-1),))
    assert taker.acquire("t1")


def test_a_live_worker_on_this_machine_keeps_its_lease(db: Database) -> None:
    alive = subprocess.Popen(["sleep", "30"])
    try:
        assert StepLeases(db, f"{socket.gethostname()}:{alive.pid}").acquire("t1")
        assert not StepLeases(db).acquire("t1")
    finally:
        alive.kill()
        alive.wait()


def test_the_lease_of_a_dead_worker_on_this_machine_is_taken_at_once(db: Database) -> None:
    zombie = subprocess.Popen(["true"])  # ended, not reaped yet
    time.sleep(0.2)
    assert StepLeases(db, f"{socket.gethostname()}:{zombie.pid}").acquire("t1")
    assert StepLeases(db, f"{socket.gethostname()}:999999999").acquire("t2")
    taker = StepLeases(db)
    assert taker.acquire("t1") and taker.acquire("t2")
    zombie.wait()
    with db.read() as conn:
        held = lease_dao.holder_of(conn, PREFIX + "t1")
    assert held is not None and held[0] == taker.holder
