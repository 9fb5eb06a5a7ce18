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
