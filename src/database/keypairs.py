"""DAO for the keypairs table: SSH public keys a project keeps, by name."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class KeypairRow:
    project: str
    name: str
    public_key: str
    fingerprint: str
    created_at: str


_COLUMNS = "project, name, public_key, fingerprint, created_at"


def insert(conn: sqlite3.Connection, keypair: KeypairRow) -> None:
    """Raises: sqlite3.IntegrityError when the project has a keypair of that name."""
    conn.execute(f"INSERT INTO keypairs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                 (keypair.project, keypair.name, keypair.public_key, keypair.fingerprint,
                  keypair.created_at))


def get(conn: sqlite3.Connection, project: str, name: str) -> KeypairRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM keypairs WHERE project = ? AND name = ?",
                       (project, name)).fetchone()
    return KeypairRow(**row) if row else None


def list_page(conn: sqlite3.Connection, project: str | None, after: KeypairRow | None,
              limit: int) -> list[KeypairRow]:
    """The project's keypairs (None: every project's) by (project, name), after the marker."""
    where, params = "(? IS NULL OR project = ?)", [project, project]
    if after is not None:
        where += " AND (project, name) > (?, ?)"
        params += [after.project, after.name]
    return [KeypairRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM keypairs WHERE {where} ORDER BY project, name LIMIT ?",
        (*params, limit))]


def count(conn: sqlite3.Connection, project: str) -> int:
    return int(conn.execute("SELECT count(*) FROM keypairs WHERE project = ?",
                            (project,)).fetchone()[0])


def delete(conn: sqlite3.Connection, project: str, name: str) -> bool:
    return conn.execute("DELETE FROM keypairs WHERE project = ? AND name = ?",
                        (project, name)).rowcount == 1
