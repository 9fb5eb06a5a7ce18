"""DAO for projects and API tokens."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenRow:
    id: str
    project: str
    role: str
    secret_hash: str
    description: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


_COLUMNS = "id, project, role, secret_hash, description, created_at, expires_at, revoked_at"


def insert(conn: sqlite3.Connection, token: TokenRow) -> None:
    conn.execute(f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (token.id, token.project, token.role, token.secret_hash, token.description,
                  token.created_at, token.expires_at, token.revoked_at))


def by_hash(conn: sqlite3.Connection, secret_hash: str) -> TokenRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE secret_hash = ?",
                       (secret_hash,)).fetchone()
    return TokenRow(**row) if row else None


def list_all(conn: sqlite3.Connection) -> list[TokenRow]:
    return [TokenRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at")]


def revoke(conn: sqlite3.Connection, token_id: str, now: str) -> bool:
    return conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                        (now, token_id)).rowcount == 1


def any_admin(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM tokens WHERE role = 'admin' LIMIT 1").fetchone() is not None
