"""DAO for the audit trail: one row per mutating request."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: str
    project: str | None
    token_id: str | None
    method: str
    path: str
    status: int
    request_id: str
    resource_id: str | None


_COLUMNS = "id, at, project, token_id, method, path, status, request_id, resource_id"


def record(conn: sqlite3.Connection, row: AuditRow) -> None:
    conn.execute("INSERT INTO audit_events (at, project, token_id, method, path, status, "
                 "request_id, resource_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (row.at, row.project, row.token_id, row.method, row.path, row.status,
                  row.request_id, row.resource_id))


def page(conn: sqlite3.Connection, filters: dict[str, object], before: int | None,
         limit: int) -> list[AuditRow]:
    """Newest first; filters are exact matches on columns, before pages by id."""
    where, params = [], []
    for column, value in filters.items():
        assert column in ("project", "method", "status", "resource_id", "token_id")
        where.append(f"{column} = ?")
        params.append(value)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    sql = f"SELECT {_COLUMNS} FROM audit_events"
    sql += (" WHERE " + " AND ".join(where)) if where else ""
    return [AuditRow(**row) for row in conn.execute(sql + " ORDER BY id DESC LIMIT ?",
                                                     (*params, limit))]


def purge_before(conn: sqlite3.Connection, before: str, batch: int) -> int:
    """Delete up to batch rows recorded before `before`; return how many."""
    return conn.execute("DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events "
                        "WHERE at < ? LIMIT ?)", (before, batch)).rowcount
