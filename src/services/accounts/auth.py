"""API tokens: issue, check and revoke. Only a SHA-256 of each token is ever stored.

Tokens are 32 random bytes, so a fast hash is enough (nothing to brute-force); the hash found
by lookup is compared again in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import uuid
from dataclasses import replace

from src import errors
from src.database import projects as project_dao
from src.database import tokens as token_dao
from src.database.db import Database
from src.services.rules import access, quotas
from src.services.rules.access import Principal
from src.utils.clock import utc_after, utc_now
from src.vocabulary import QUOTA_RESOURCES, ROLES

PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
TOKEN_PREFIX = "iaas_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_project_limits(defaults: tuple[int | None, ...]) -> project_dao.Limits:
    return dict(zip(QUOTA_RESOURCES, defaults, strict=True))


def _maker_expiry(conn: sqlite3.Connection, maker_id: str) -> str | None:
    """When the maker expires. Raises: Unauthorized when it is gone, revoked or expired (it
    was valid when its request began: a revoke may have come in between)."""
    maker = token_dao.by_id(conn, maker_id)
    if maker is None or maker.revoked_at is not None or (
            maker.expires_at is not None and maker.expires_at <= utc_now()):
        raise errors.Unauthorized()
    return maker.expires_at


def _earliest(first: str | None, second: str | None) -> str | None:
    """The earlier of two expiries, None being never."""
    return min((at for at in (first, second) if at is not None), default=None)


class TokenService:
    def __init__(self, db: Database,
                 new_project_limits: project_dao.Limits | None = None) -> None:
        self._db = db
        self._new_project_limits = new_project_limits or {}

    def issue(self, project: str, role: str, expires_in_s: float | None = None,
              description: str = "", created_by: str | None = None,
              within_maker: bool = False, counted: bool = False) -> tuple[token_dao.TokenRow, str]:
        """A new token (the row, and the secret shown this once); within_maker: it expires by
        its maker's (created_by's) expiry at the latest; counted: a member makes it, so it
        counts against the project's tokens quota.

        Raises: ValueError, Unauthorized (within_maker, and the maker was revoked or expired
        meanwhile), QuotaExceeded (counted: tokens).
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not PROJECT_NAME.fullmatch(project):
            raise ValueError("a project name is 1-63 of a-z 0-9 _ . - and starts with a letter "
                             "or digit")
        if not description.isprintable():  # it is shown on terminals: no escapes, no lines
            raise ValueError("a description holds printable characters only (no control "
                             "characters or line breaks)")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        row = token_dao.TokenRow(
            id=str(uuid.uuid4()), project=project, role=role, secret_hash=_hash(secret),
            description=description, created_at=now,
            expires_at=utc_after(expires_in_s) if expires_in_s is not None else None,
            revoked_at=None, created_by=created_by)
        with self._db.write() as conn:
            if within_maker and created_by is not None:
                row = replace(row, expires_at=_earliest(row.expires_at,
                                                        _maker_expiry(conn, created_by)))
            project_dao.create(conn, project, self._new_project_limits, now)
            if counted:
                quotas.enforce(conn, project, {"tokens": 1})
            token_dao.insert(conn, row)
        return row, secret

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an Authorization header. Raises: Unauthorized."""
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise errors.Unauthorized()
        wanted = _hash(secret.strip())
        with self._db.read() as conn:
            row = token_dao.by_hash(conn, wanted)
        if row is None or not hmac.compare_digest(row.secret_hash, wanted):
            raise errors.Unauthorized()
        if row.revoked_at is not None or (row.expires_at is not None
                                          and row.expires_at <= utc_now()):
            raise errors.Unauthorized()
        return Principal(token_id=row.id, project=row.project, role=row.role)

    def identify(self, authorization: str | None) -> Principal | None:
        """The caller behind a token, or None when there is none, it is not valid, or the
        database cannot tell (the health check must still answer then)."""
        if authorization is None:
            return None
        try:
            return self.authenticate(authorization)
        except (errors.Unauthorized, sqlite3.Error):
            return None

    def create(self, caller: Principal, project: str, role: str,
               expires_in_days: float | None = None,
               description: str = "") -> tuple[token_dao.TokenRow, str]:
        """A token made through the API, remembering its maker (the secret is shown once).

        Raises: Forbidden (a member asking for more than its own), BadRequest, QuotaExceeded
        (a member's, over the project's tokens).
        """
        access.check_token_grant(caller, project, role)
        try:
            return self.issue(project, role, expires_in_days * 86400
                              if expires_in_days is not None else None,
                              description, created_by=caller.token_id,
                              within_maker=access.tokens_end_with_maker(caller),
                              counted=not caller.is_admin)
        except ValueError as exc:
            raise errors.BadRequest(reason=str(exc)) from None

    def visible(self, caller: Principal, limit: int = -1,
                marker: str | None = None) -> list[token_dao.TokenRow]:
        """A page of the tokens caller may see, oldest first, after the marker token: every one
        for admins, otherwise its own and those made from it (by it, by those it made, and so
        on). limit -1: all.

        Raises: MarkerNotFound (not a token caller sees).
        """
        with self._db.read() as conn:
            after = token_dao.by_id(conn, marker) if marker is not None else None
            if marker is not None and (after is None or not access.sees_token(
                    caller, token_dao.lineage(conn, marker))):
                raise errors.MarkerNotFound(marker=marker)
            if caller.is_admin:
                return token_dao.page(conn, after, limit)
            return token_dao.list_made_from(conn, caller.token_id, after, limit)

    def revoke_for(self, caller: Principal, token_id: str) -> token_dao.TokenRow:
        """Revoke a token caller may see, and with a member token every token made from it
        (revoking one already revoked changes nothing).

        Raises: TokenNotFound (unknown, or not caller's to see).
        """
        with self._db.write() as conn:
            row = token_dao.by_id(conn, token_id)
            if row is None or not access.sees_token(caller, token_dao.lineage(conn, row.id)):
                raise errors.TokenNotFound(token=token_id)
            token_dao.revoke(conn, row.id, utc_now())
        return row

    def list(self) -> list[token_dao.TokenRow]:
        with self._db.read() as conn:
            return token_dao.list_all(conn)

    def revoke(self, token_id: str) -> int:
        """Revoke a token (with a member token, every token made from it): how many were."""
        with self._db.write() as conn:
            return token_dao.revoke(conn, token_id, utc_now())

    def first_admin_token(self) -> str | None:
        """An admin token for the default project if none exists yet (its secret), else None."""
        with self._db.read() as conn:
            if token_dao.any_admin(conn):
                return None
        return self.issue("default", "admin", description="created by db-init")[1]
