"""The meta table: installation-wide facts such as this installation's id."""
from __future__ import annotations

import sqlite3
import uuid

INSTALLATION_KEY = "installation_id"


def ensure_installation_id(conn: sqlite3.Connection) -> str:
    """Return this installation's id, creating it on first use."""
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                 (INSTALLATION_KEY, str(uuid.uuid4())))
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (INSTALLATION_KEY,)).fetchone()
    return str(row["value"])
