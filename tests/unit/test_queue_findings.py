"""A queue pass's findings (position, estimate, reason of each wait) are stored exactly as
found, whether they go as one range UPDATE of moved positions or one by one; checked against
writing each wait on its own, on random queues."""
from __future__ import annotations

import random
import sqlite3

import pytest

from src.database import capacity_waits as wait_dao
from src.database import vms as vm_dao
from src.database.db import Database
from tests.unit.conftest import IMAGE_ID, NOW

REASONS = ("gpu", "vcpu", "ram")
ESTIMATES = (None, "2026-01-02T00:00:00.000000Z")


class Undone(Exception):
    """Raised to roll a round back: the queue as it was for the next."""


def _queue(db: Database, rng: random.Random, count: int) -> None:
    """count waits, most of them at positions 1.. in order, some at a position repeated or
    none (a wait queued since the last pass)."""
    with db.write() as conn:
        for index in range(count):
            vm_id = f"00000000-0000-0000-0000-{index:012d}"
            vm_dao.insert(conn, vm_dao.VmRow(
                id=vm_id, name=f"q{index}", cpu=1, ram=128, disk_gb=1, image_id=IMAGE_ID,
                image_name="base", status="queued", vnc_port=None, error_code=None,
                error_message=None, created_at=NOW, updated_at=NOW, mac=f"52:54:00:00:00:{index:02x}",
                flavor_name="g.1", numa_node=None, pinned_cpus=[], project="p", host=""))
            position = rng.choice([index + 1] * 8 + [None, max(1, index)])
            wait_dao.insert(conn, wait_dao.WaitRow(
                vm_id, f"task-{index}", "p", NOW, NOW, rng.choice(REASONS), {"cpu": 1},
                position=position, estimated_start_at=rng.choice(ESTIMATES)))


def _stored(conn: sqlite3.Connection) -> dict[str, tuple[int | None, str | None, str]]:
    return {wait.vm_id: (wait.position, wait.estimated_start_at, wait.reason)
            for wait in wait_dao.list_all(conn)}


def _findings(rng: random.Random, waits: list[wait_dao.WaitRow]) -> list[wait_dao.Finding]:
    """Positions 1.. in a shuffled-a-little order: most move up by one or two (the placed ones
    were ahead), a run of them may move down by one (one wait moved ahead of them), some
    change reason or estimate, some stay."""
    order = list(waits)
    if rng.random() < 0.5:
        order.insert(rng.randrange(len(order)), order.pop(rng.randrange(len(order))))
    for _ in range(rng.randint(0, 4)):
        first, second = rng.randrange(len(order)), rng.randrange(len(order))
        order[first], order[second] = order[second], order[first]
    found: list[wait_dao.Finding] = []
    for position, wait in enumerate(order, 1):
        reason = wait.reason if rng.random() < 0.9 else rng.choice(REASONS)
        estimate = (wait.estimated_start_at if rng.random() < 0.9
                    else rng.choice(ESTIMATES))
        found.append((wait, position, estimate, reason))
    return found


def test_findings_are_stored_as_found_on_random_queues(db: Database) -> None:
    rng = random.Random(23)
    _queue(db, rng, 60)
    for _ in range(200):
        with pytest.raises(Undone), db.write() as conn:
            waits = wait_dao.list_all(conn)
            placed = set(rng.sample(range(len(waits)), rng.randint(0, 3)))
            for index in placed:
                wait_dao.delete(conn, waits[index].vm_id)
            left = [wait for index, wait in enumerate(waits) if index not in placed]
            # A wait deleted meanwhile (a placement that failed and ended it) may be listed.
            gone = left[rng.randrange(len(left))] if rng.random() < 0.2 else None
            if gone is not None:
                wait_dao.delete(conn, gone.vm_id)
            findings = _findings(rng, left)
            wait_dao.set_findings(conn, findings)
            assert _stored(conn) == {wait.vm_id: (position, estimate, reason)
                                     for wait, position, estimate, reason in findings
                                     if wait is not gone}
            raise Undone


def test_a_placement_at_the_front_moves_the_rest_in_one_statement(db: Database) -> None:
    rng = random.Random(1)
    _queue(db, rng, 30)
    with db.write() as conn:
        conn.execute("UPDATE capacity_waits SET position = CAST(substr(vm_id, 25) AS INTEGER) + 1")
        waits = wait_dao.list_all(conn)
        wait_dao.delete(conn, waits[0].vm_id)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        wait_dao.set_findings(conn, [(wait, position, wait.estimated_start_at, wait.reason)
                                     for position, wait in enumerate(waits[1:], 1)])
        conn.set_trace_callback(None)
        assert [row.position for row in wait_dao.list_all(conn)] == list(range(1, 30))
    assert len([sql for sql in statements if sql.startswith("UPDATE")]) == 1


def test_nothing_changed_writes_nothing(db: Database) -> None:
    _queue(db, random.Random(2), 10)
    with db.write() as conn:
        conn.execute("UPDATE capacity_waits SET position = 1 WHERE position IS NULL")
        waits = wait_dao.list_all(conn)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        wait_dao.set_findings(conn, [(wait, wait.position or 0, wait.estimated_start_at,
                                      wait.reason) for wait in waits])
        conn.set_trace_callback(None)
    assert not [sql for sql in statements if sql.startswith("UPDATE")]
