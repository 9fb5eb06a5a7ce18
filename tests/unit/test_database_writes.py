"""How write units of work meet: the WAL stays between them, and a write queued behind
another process's starts as that one ends, not after SQLite's busy handler's next sleep."""
from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from src.database import db as db_module
from src.database.db import GATE_SUFFIX, Database

HOLDER = """
import sys, time
from pathlib import Path
from src.database.db import Database
db = Database(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    with db.write() as conn:
        print("holding", flush=True)
        conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('x', 'y', 'z') "
                     "ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at")
        time.sleep(float(sys.argv[3]))
        ended = time.monotonic()
    print(ended, flush=True)
    sys.stdin.readline()  # the test's write has run: hold again
"""

GATE_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(60)
"""


def test_the_wal_stays_between_units_of_work(tmp_path: Path) -> None:
    """The last connection's close checkpoints and deletes the WAL, and the next unit of work
    makes it anew: 7.5 ms a write instead of 1 ms."""
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    with db.write() as conn:
        conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'b', 'c')")
    assert (tmp_path / "iaas.db-wal").exists()
    with db.read() as conn:
        assert conn.execute("SELECT holder FROM leases").fetchone()[0] == "b"


def test_a_write_behind_another_process_starts_as_soon_as_that_one_ends(tmp_path: Path) -> None:
    """SQLite's busy handler sleeps up to 100 ms between looks at a lock it found taken, and
    the lock sits free meanwhile; writers of every process queue on one gate instead."""
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    rounds, hold_s = 9, 0.4  # past 0.3 s of waiting, SQLite's handler sleeps 100 ms a time
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db.path), str(rounds),
                               str(hold_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[2])
    assert holder.stdin is not None and holder.stdout is not None
    delays = []
    try:
        for _ in range(rounds):
            assert holder.stdout.readline().strip() == "holding"
            with db.write() as conn:
                started = time.monotonic()
                conn.execute("SELECT 1")
            delays.append(started - float(holder.stdout.readline()))
            holder.stdin.write("\n")
            holder.stdin.flush()
    finally:
        holder.kill()
        holder.wait()
    assert min(delays) >= 0
    assert statistics.median(delays) < 0.015, [round(delay * 1000, 1) for delay in delays]


def test_a_gate_held_for_good_fails_the_write_as_a_locked_database_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process stopped (SIGSTOP) inside its write keeps the gate: a writer behind it gives up
    after the busy timeout with SQLite's own error, and never waits for good."""
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_S", 0.5)
    holder = subprocess.Popen([sys.executable, "-c", GATE_HOLDER, f"{db.path}{GATE_SUFFIX}"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            with db.write() as conn:
                conn.execute("SELECT 1")
        except sqlite3.OperationalError as exc:
            outcome.append(exc)

    try:
        assert holder.stdout.readline().strip() == "holding"
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(timeout=20)
        assert not writer.is_alive(), "the write still waits on the gate"
    finally:
        holder.kill()
        holder.wait()
    assert len(outcome) == 1 and "locked" in str(outcome[0])


def test_threads_behind_another_process_wait_without_spinning(tmp_path: Path) -> None:
    """Fifty writers of one process behind another process's write: one of them looks at the
    gate, the rest wait their turn on a lock (each looking every 2 ms burnt a core)."""
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db.path), "1", "1.0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    assert holder.stdin is not None and holder.stdout is not None

    def write(index: int) -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES (?, 'b', 'c')",
                         (f"w{index}",))

    try:
        assert holder.stdout.readline().strip() == "holding"
        cpu = time.process_time()
        writers = [threading.Thread(target=write, args=(index,)) for index in range(50)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=30)
        cpu = time.process_time() - cpu
        float(holder.stdout.readline())  # the holder's write had ended before theirs
    finally:
        holder.kill()
        holder.wait()
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM leases WHERE name LIKE 'w%'").fetchone()[0] == 50
    # Polling every 2 ms each burnt ~620 ms; starting 50 threads and their inserts cost up to
    # ~190 ms on a loaded CI machine, so the bound sits between the two.
    assert cpu < 0.35, f"{cpu * 1000:.0f} ms of CPU while waiting about 1 s"
