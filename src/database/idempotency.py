"""DAO for idempotency keys: a claim per (token, key), later holding the stored answer."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyRow:
    request_hash: str
    status: int | None  # None while the first request is still being answered
    response: str | None  # JSON of the stored answer


def purge_older_than(conn: sqlite3.Connection, cutoff: str) -> None:
    conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (cutoff,))


def drop_unanswered_claim(conn: sqlite3.Connection, token_id: str, key: str, cutoff: str) -> None:
    """Remove a claim made before cutoff that never got an answer (its request died)."""
    conn.execute("DELETE FROM idempotency_keys WHERE token_id = ? AND key = ? AND "
                 "status IS NULL AND created_at < ?", (token_id, key, cutoff))


def get(conn: sqlite3.Connection, token_id: str, key: str) -> KeyRow | None:
    row = conn.execute("SELECT request_hash, status, response FROM idempotency_keys "
                       "WHERE token_id = ? AND key = ?", (token_id, key)).fetchone()
    return KeyRow(**row) if row else None


def claim(conn: sqlite3.Connection, token_id: str, key: str, request_hash: str,
          now: str) -> None:
    conn.execute("INSERT INTO idempotency_keys (token_id, key, request_hash, created_at) "
                 "VALUES (?, ?, ?, ?)", (token_id, key, request_hash, now))


def release(conn: sqlite3.Connection, token_id: str, key: str) -> None:
    conn.execute("DELETE FROM idempotency_keys WHERE token_id = ? AND key = ?", (token_id, key))


def store_answer(conn: sqlite3.Connection, token_id: str, key: str, status: int,
                 response: str) -> None:
    conn.execute("UPDATE idempotency_keys SET status = ?, response = ? "
                 "WHERE token_id = ? AND key = ?", (status, response, token_id, key))
