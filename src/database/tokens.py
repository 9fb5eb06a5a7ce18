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
    created_by: str | None = None  # the token that made it through the API


_COLUMNS = ("id, project, role, secret_hash, description, created_at, expires_at, revoked_at, "
            "created_by")


def insert(conn: sqlite3.Connection, token: TokenRow) -> None:
    conn.execute(f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (token.id, token.project, token.role, token.secret_hash, token.description,
                  token.created_at, token.expires_at, token.revoked_at, token.created_by))


def by_hash(conn: sqlite3.Connection, secret_hash: str) -> TokenRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE secret_hash = ?",
                       (secret_hash,)).fetchone()
    return TokenRow(**row) if row else None


def list_all(conn: sqlite3.Connection) -> list[TokenRow]:
    return [TokenRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at")]


def by_id(conn: sqlite3.Connection, token_id: str) -> TokenRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
    return TokenRow(**row) if row else None


def list_own(conn: sqlite3.Connection, token_id: str) -> list[TokenRow]:
    """The token itself and those it made."""
    return [TokenRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tokens WHERE id = ? OR created_by = ? ORDER BY created_at",
        (token_id, token_id))]


def revoke(conn: sqlite3.Connection, token_id: str, now: str) -> bool:
    return conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                        (now, token_id)).rowcount == 1


def any_admin(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM tokens WHERE role = 'admin' LIMIT 1").fetchone() is not None
