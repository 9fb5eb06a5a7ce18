"""DAO for leases: a named job that one process at a time may do (the periodic sweep)."""
from __future__ import annotations

import sqlite3


def take(conn: sqlite3.Connection, name: str, holder: str, now: str, until: str) -> bool:
    """Take or renew the lease for holder; False while another holder's lease runs.

    Call inside a write transaction.
    """
    row = conn.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
    if row is not None and row["holder"] != holder and row["expires_at"] > now:
        return False
    conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                 "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                 "expires_at = excluded.expires_at", (name, holder, until))
    return True


def holder_of(conn: sqlite3.Connection, name: str) -> tuple[str, str] | None:
    """(holder, expires_at) of the lease, or None when nobody holds it."""
    row = conn.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
    return None if row is None else (row["holder"], row["expires_at"])


def renew(conn: sqlite3.Connection, names: list[str], holder: str, until: str) -> None:
    """Extend holder's leases among names."""
    conn.executemany("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                     [(until, name, holder) for name in names])


def give_up(conn: sqlite3.Connection, name: str, holder: str) -> None:
    """Drop holder's lease (another holder's stays)."""
    conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


def drop_expired(conn: sqlite3.Connection, prefix: str, now: str) -> int:
    """Forget leases under prefix that ran out (their holders died); how many."""
    return conn.execute("DELETE FROM leases WHERE name >= ? AND name < ? AND expires_at <= ?",
                        (prefix, prefix + "\uffff", now)).rowcount
