"""Connections reused between units of work: each sees what others committed since, and one
left inside a transaction is never handed out again."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from src.database.db import IDLE_CONNECTIONS, Database

WRITER = """
import sys
from pathlib import Path
from src.database.db import Database
with Database(Path(sys.argv[1])).write() as conn:
    conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('other', 'p', 'z')")
"""


def _holder(db: Database, name: str) -> str | None:
    with db.read() as conn:
        row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def test_a_reused_connection_sees_what_another_process_committed(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    assert _holder(db, "other") is None  # the connection that read this waits, idle
    subprocess.run([sys.executable, "-c", WRITER, str(db.path)], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    assert _holder(db, "other") == "p"


def test_units_of_work_reuse_a_connection(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    with db.read() as conn:
        first = conn
    with db.write() as conn:
        assert conn is first
        conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'b', 'c')")
    with db.read() as conn:
        assert conn is first and conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 1


def test_a_connection_left_in_a_transaction_is_closed_not_reused(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    with pytest.raises(RuntimeError), db.read() as conn:
        conn.execute("BEGIN")
        left = conn
        raise RuntimeError("the block failed inside its own transaction")
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        left.execute("SELECT 1")
    with db.read() as conn:
        assert conn is not left and not conn.in_transaction


def test_a_failed_write_rolls_back_and_its_connection_serves_again(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    with pytest.raises(sqlite3.IntegrityError), db.write() as conn:
        conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'b', 'c')")
        conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'b', 'c')")
    assert _holder(db, "a") is None


def test_at_most_idle_connections_wait(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    opened = [db.read() for _ in range(IDLE_CONNECTIONS + 3)]
    conns = [block.__enter__() for block in opened]
    for block in opened:
        block.__exit__(None, None, None)
    closed = 0
    for conn in conns:
        try:
            conn.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            closed += 1
    assert closed == 3
