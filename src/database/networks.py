"""DAO for the networks table: the libvirt networks the platform defined, one row per host."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkRow:
    host: str
    name: str
    mode: str  # isolated, nat or bridge
    subnet: str | None
    bridge: str | None
    created_at: str


_COLUMNS = "host, name, mode, subnet, bridge, created_at"


def insert(conn: sqlite3.Connection, row: NetworkRow) -> None:
    """Raises: sqlite3.IntegrityError when the host has a network of that name already."""
    conn.execute(f"INSERT INTO networks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                 (row.host, row.name, row.mode, row.subnet, row.bridge, row.created_at))


def get(conn: sqlite3.Connection, host: str, name: str) -> NetworkRow | None:
    found = conn.execute(f"SELECT {_COLUMNS} FROM networks WHERE host = ? AND name = ?",
                         (host, name)).fetchone()
    return None if found is None else NetworkRow(*found)


def list_all(conn: sqlite3.Connection) -> list[NetworkRow]:
    return [NetworkRow(*found) for found in conn.execute(
        f"SELECT {_COLUMNS} FROM networks ORDER BY host, name")]


def delete(conn: sqlite3.Connection, host: str, name: str) -> bool:
    """Whether a row was removed."""
    return conn.execute("DELETE FROM networks WHERE host = ? AND name = ?",
                        (host, name)).rowcount > 0


def forget_host(conn: sqlite3.Connection, host: str) -> None:
    """The host is removed: what the platform defined there is its libvirt's alone now."""
    conn.execute("DELETE FROM networks WHERE host = ?", (host,))
