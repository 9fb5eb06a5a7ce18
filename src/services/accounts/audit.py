"""The audit trail: one row per mutating request, filed under the project it touched."""
from __future__ import annotations

import logging
import sqlite3
from typing import Protocol

from src.database import audit as audit_dao
from src.database.db import Database
from src.services.rules import access
from src.services.rules.access import Principal
from src.utils.clock import utc_now

log = logging.getLogger(__name__)
PATH_CHARS = 256  # junk paths cannot flood the table


class Touched(Protocol):
    """What a mutating service call answers with (the row it made, changed or deleted): it names
    the project whose thing that is, so the request is filed there."""

    @property
    def project(self) -> str: ...


class AuditTrail:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, caller: Principal, method: str, path: str, status: int,
               request_id: str, resource_id: str | None, touched: Touched | None) -> None:
        """Record a request under the project of what it touched (a public image's: their
        reserved owner); when it names nothing (a refusal, a flavor, a host), a member's under
        its own project, an admin's under none (only admins read those). A failure to record
        is logged, never the caller's problem."""
        row = audit_dao.AuditRow(
            id=0, at=utc_now(),
            project=touched.project if touched is not None else access.own_project(caller),
            token_id=caller.token_id, method=method, path=path[:PATH_CHARS],
            status=status, request_id=request_id, resource_id=resource_id)
        try:
            with self._db.write() as conn:
                audit_dao.record(conn, row)
        except sqlite3.Error:
            log.exception("could not record %s %s in the audit trail", method, path)

    def page(self, caller: Principal, filters: dict[str, object], marker: int | None,
             limit: int) -> list[audit_dao.AuditRow]:
        """Newest first. Members read only their own project's trail (another: empty)."""
        own = access.scope(caller)
        if own is not None:
            if filters.get("project", own) != own:
                return []
            filters = {**filters, "project": own}
        with self._db.read() as conn:
            return audit_dao.page(conn, filters, marker, limit)
