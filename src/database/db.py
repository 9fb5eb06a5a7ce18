"""SQLite connections: WAL kept open, busy timeout, foreign keys, BEGIN IMMEDIATE writes queued
on one gate for every process, idle connections reused, numbered migrations."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from src.utils.clock import utc_now

BUSY_TIMEOUT_S = 30.0
PRIVATE_MODE = 0o600
GATE_SUFFIX = "-writers"  # beside the database: the flock its writers queue on
GATE_LOOK_S = 0.002  # a writer behind another looks at the gate again at least this often
IDLE_CONNECTIONS = 8  # kept open for the next unit of work; more at once are closed after use
_GATES_HELD = threading.local()  # the gates this thread holds (paths)
# The threads of one process queue for a gate on a lock, so one of them at a time looks at its
# flock: a hundred sweeps due at once, each looking every 2 ms, burnt a core between them.
_TURNS: dict[str, threading.Lock] = {}
_TURNS_GUARD = threading.Lock()


class Database:
    """Gives each unit of work a connection of its own, so threads never share one at a time;
    a connection that ended its unit of work cleanly waits for the next. A connection reads
    the whole schema at its first statement (119 tables, indexes and triggers: 2.4 ms, where
    the statement itself took 0.02 ms), and a create made seven units of work."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keeper: sqlite3.Connection | None = None
        self._keeper_guard = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._idle_pid = os.getpid()  # a child process never uses its parent's connections

    def _keep_open(self) -> None:
        """Hold one idle connection for as long as this object lives. When the last connection
        to a WAL database closes, SQLite checkpoints the WAL and deletes it, and the next
        opens it anew: a write unit of work cost 2.9 ms that way instead of 1.3 ms, a read 1.1
        instead of 0.5 (one process, nothing else open)."""
        if self._keeper is None and self.path.exists():
            with self._keeper_guard:
                if self._keeper is None:
                    keeper = sqlite3.connect(self.path, check_same_thread=False)
                    # It counts as open once it has read in WAL mode (before migrate set
                    # the mode, it looks again next time).
                    if keeper.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                        self._keeper = keeper
                    else:
                        keeper.close()

    def _connect(self, foreign_keys: bool = True) -> sqlite3.Connection:
        if foreign_keys:
            with self._keeper_guard:
                if self._idle_pid != os.getpid():
                    self._idle, self._idle_pid = [], os.getpid()
                if self._idle:
                    return self._idle.pop()
        return self._open(foreign_keys)

    def _open(self, foreign_keys: bool = True) -> sqlite3.Connection:
        self._keep_open()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return conn

    def _release(self, conn: sqlite3.Connection, foreign_keys: bool = True) -> None:
        """Keep conn for the next unit of work, unless a transaction is still open in it (a
        read block that began one and raised) or enough wait already."""
        if foreign_keys and not conn.in_transaction:
            with self._keeper_guard:
                if self._idle_pid == os.getpid() and len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    return
        conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads (each statement sees a consistent snapshot)."""
        conn = self._connect()
        try:
            yield conn
        finally:
            self._release(conn)

    @contextmanager
    def write(self, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        """A BEGIN IMMEDIATE transaction: committed on success, rolled back on any exception.

        foreign_keys=False is for migrations only (see migrate).
        """
        conn = self._connect(foreign_keys)
        try:
            with self._write_gate():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        finally:
            self._release(conn, foreign_keys)

    @contextmanager
    def _write_gate(self) -> Iterator[None]:
        """Writers of every process (and thread) take turns on one flock before SQLite's write
        lock. SQLite's busy handler sleeps between looks at a taken lock (up to 100 ms a time)
        while the lock sits free; a gate waiter looks every GATE_LOOK_S at most, and the kernel
        lets go for a holder that dies. The gate only orders writers: SQLite's own lock still
        guards the data (a writer without the gate, the sqlite3 shell, is safe).

        Raises: sqlite3.OperationalError when the gate stays taken BUSY_TIMEOUT_S (a stopped
        process holds it), as SQLite's own lock would.
        """
        gate = f"{self.path}{GATE_SUFFIX}"
        held = _GATES_HELD.__dict__.setdefault("paths", set())
        if gate in held:  # a write inside this thread's own write: left to SQLite's busy
            yield         # timeout, as before the gate, rather than waiting on itself
            return
        with _TURNS_GUARD:
            turn = _TURNS.setdefault(gate, threading.Lock())
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        if not turn.acquire(timeout=BUSY_TIMEOUT_S):
            raise _gate_timeout()
        try:
            fd = os.open(gate, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
            try:
                _take(fd, deadline)
                held.add(gate)
                try:
                    yield
                finally:
                    held.discard(gate)
            finally:
                os.close(fd)  # closing the last descriptor of the open file lets the flock go
        finally:
            turn.release()

    def migrate(self, until: int | None = None) -> list[int]:
        """Apply pending numbered migrations (up to version until); return those applied now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._make_private()
        with self.read() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        applied_now = []
        for version, sql in _migrations():
            if until is not None and version > until:
                break
            # Foreign keys off: rebuilding a table (create, copy, drop, rename) must not cascade
            # the drop into the rows that reference it. They are checked before the commit.
            with self.write(foreign_keys=False) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                             "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                                    (version,)).fetchone()
                if done:
                    continue
                for statement in _statements(sql):
                    conn.execute(statement)
                _check_foreign_keys(conn, version)
                conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                             (version, utc_now()))
                applied_now.append(version)
        return applied_now

    def _make_private(self) -> None:
        """The database and its WAL are readable by their owner only; SQLite gives the -wal
        and -shm files the database file's mode, so the file is made 0600 before it opens."""
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        for path in (self.path, *self.path.parent.glob(self.path.name + "-*")):
            try:
                os.chmod(path, PRIVATE_MODE)
            except FileNotFoundError:
                pass  # a -wal or -shm the last connection just removed

    def commit_counter(self) -> tuple[Callable[[], int], Callable[[], None]]:
        """(read, close): read() changes whenever another connection (another process) has
        committed, from PRAGMA data_version on a connection kept open for it."""
        conn = self._connect()
        return (lambda: int(conn.execute("PRAGMA data_version").fetchone()[0])), conn.close

    def ping(self) -> None:
        """Raises: sqlite3.Error when the database cannot be read (opened anew: an idle
        connection would still read a file removed since)."""
        conn = self._open()
        try:
            conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        finally:
            conn.close()


def _take(fd: int, deadline: float) -> None:
    """flock fd, looking again at growing pauses up to GATE_LOOK_S, until deadline (a blocking
    flock has no timeout: a stopped holder would hold every writer for good).

    Raises: sqlite3.OperationalError past deadline.
    """
    pause = GATE_LOOK_S / 16
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _gate_timeout() from None
            time.sleep(pause)
            pause = min(pause * 2, GATE_LOOK_S)


def _gate_timeout() -> sqlite3.OperationalError:
    return sqlite3.OperationalError(
        f"database is locked (its writers' gate stayed taken {BUSY_TIMEOUT_S:g} s)")


def _check_foreign_keys(conn: sqlite3.Connection, version: int) -> None:
    """Raises: sqlite3.IntegrityError when the migration left a reference without its row."""
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.IntegrityError(
            f"migration {version} breaks foreign keys: {[tuple(row) for row in broken[:5]]}")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("src.database") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    """The statements of a migration; executescript() would COMMIT our transaction, so split,
    keeping a trigger's BEGIN ... END body whole."""
    statements, pending = [], ""
    for part in sql.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements
