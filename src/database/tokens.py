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
        f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at, id")]


def _after(after: TokenRow | None) -> tuple[str, list[object]]:
    """The condition, and its values, of the tokens that come after the marker token (None:
    every token)."""
    if after is None:
        return "1", []
    return "(created_at, id) > (?, ?)", [after.created_at, after.id]


def page(conn: sqlite3.Connection, after: TokenRow | None, limit: int) -> list[TokenRow]:
    """Every token by (created_at, id), after the marker token."""
    where, params = _after(after)
    return [TokenRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tokens WHERE {where} ORDER BY created_at, id LIMIT ?",
        (*params, limit))]


def live_made_by_members(conn: sqlite3.Connection, project: str, now: str) -> int:
    """The project's tokens that member tokens made and that still work (not revoked, not
    expired): what the tokens quota counts."""
    return int(conn.execute(
        "SELECT count(*) FROM tokens AS t JOIN tokens AS maker ON maker.id = t.created_by "
        "WHERE t.project = ? AND maker.role = 'member' AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > ?)", (project, now)).fetchone()[0])


def by_id(conn: sqlite3.Connection, token_id: str) -> TokenRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
    return TokenRow(**row) if row else None


# The ids of the token (?) and of every token made from it, at any depth, through member makers
# only: a member token's makings live and die with it, an admin token's stand on their own.
# (A subquery: sqlite3 reports no rowcount for a statement that starts WITH.)
_MADE_FROM = ("(WITH RECURSIVE made (id, role) AS (SELECT id, role FROM tokens WHERE id = ? "
              "UNION SELECT t.id, t.role FROM tokens AS t JOIN made AS m ON t.created_by = m.id "
              "WHERE m.role = 'member') SELECT id FROM made)")


def list_made_from(conn: sqlite3.Connection, token_id: str, after: TokenRow | None = None,
                   limit: int = -1) -> list[TokenRow]:
    """The token itself and those made from it (by it, by those it made, and so on), by
    (created_at, id), after the marker token (limit -1: all)."""
    where, params = _after(after)
    return [TokenRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tokens WHERE id IN {_MADE_FROM} AND {where} "
        "ORDER BY created_at, id LIMIT ?", (token_id, *params, limit))]


def lineage(conn: sqlite3.Connection, token_id: str) -> list[str]:
    """The token's id and those of its makers up the chain, nearest first."""
    return [row[0] for row in conn.execute(
        "WITH RECURSIVE up (id, created_by, depth) AS (SELECT id, created_by, 0 FROM tokens "
        "WHERE id = ? UNION SELECT t.id, t.created_by, up.depth + 1 FROM tokens AS t "
        "JOIN up ON t.id = up.created_by) SELECT id FROM up ORDER BY depth", (token_id,))]


def revoke(conn: sqlite3.Connection, token_id: str, now: str) -> int:
    """Revoke the token and, if it is a member token, every token made from it; how many
    tokens this revoked (0: none was active)."""
    return conn.execute(
        f"UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND id IN {_MADE_FROM}",
        (now, token_id)).rowcount


def any_admin(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM tokens WHERE role = 'admin' LIMIT 1").fetchone() is not None
