"""Keypairs: SSH public keys a project keeps by name, put in its VMs with `key_names`."""
from __future__ import annotations

import base64
import hashlib
import sqlite3

from src import errors
from src.database import keypairs as keypair_dao
from src.database.db import Database
from src.services.rules import access, quotas, seeds
from src.services.rules.access import Principal
from src.utils.clock import utc_now


def fingerprint(public_key: str) -> str:
    """The key's SHA256 fingerprint as `ssh-keygen -lf` prints it: SHA256:<base64, no padding>."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def keys_of(db: Database, names: list[str] | tuple[str, ...], project: str) -> tuple[str, ...]:
    """The public keys of project's keypairs named. Raises: KeypairNotFoundInRequest."""
    keys = []
    with db.read() as conn:
        for name in names:
            row = keypair_dao.get(conn, project, name)
            if row is None:
                raise errors.KeypairNotFoundInRequest(keypair=name)
            keys.append(row.public_key)
    return tuple(keys)


class KeypairService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str, public_key: str, caller: Principal) -> keypair_dao.KeypairRow:
        """Keep a key for caller's project.

        Raises: ValidationFailed (not an OpenSSH public key), NameConflict, QuotaExceeded
        (keypairs).
        """
        try:
            (key,) = seeds.checked_ssh_keys([public_key])
        except errors.ValidationFailed as exc:
            raise errors.ValidationFailed(exc.message, errors=[
                {**problem, "field": "public_key"} for problem in exc.details["errors"]]) from None
        row = keypair_dao.KeypairRow(project=caller.project, name=name, public_key=key,
                                     fingerprint=fingerprint(key), created_at=utc_now())
        try:
            with self._db.write() as conn:
                quotas.enforce(conn, row.project, {"keypairs": 1})
                keypair_dao.insert(conn, row)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="keypair", name=name) from None
        return row

    def list(self, caller: Principal, project: str | None = None, limit: int = -1,
             marker: str | None = None) -> list[keypair_dao.KeypairRow]:
        """A page of caller's project's keypairs (an admin's: every project's, or project's)
        by project and name, after the marker (`project/name`, as marker_of gives it).

        Raises: MarkerNotFound (not a keypair of this list).
        """
        scope = access.scope(caller) or project
        with self._db.read() as conn:
            after = None
            if marker is not None:
                owner, _, name = marker.rpartition("/")
                after = keypair_dao.get(conn, owner, name)
                if after is None or scope not in (None, after.project):
                    raise errors.MarkerNotFound(marker=marker)
            return keypair_dao.list_page(conn, scope, after, limit)

    def get(self, name: str, caller: Principal, project: str | None = None) -> keypair_dao.KeypairRow:
        """Raises: KeypairNotFound, also for another project's (members)."""
        with self._db.read() as conn:
            row = keypair_dao.get(conn, access.keypair_scope(caller, name, project), name)
        if row is None:
            raise errors.KeypairNotFound(keypair=name)
        return row

    def delete(self, name: str, caller: Principal,
               project: str | None = None) -> keypair_dao.KeypairRow:
        """The keypair deleted. Raises: KeypairNotFound."""
        with self._db.write() as conn:
            row = keypair_dao.get(conn, access.keypair_scope(caller, name, project), name)
            if row is None or not keypair_dao.delete(conn, row.project, name):
                raise errors.KeypairNotFound(keypair=name)
        return row


def marker_of(row: keypair_dao.KeypairRow) -> str:
    """The marker of the page that starts after row (names and projects hold no `/`)."""
    return f"{row.project}/{row.name}"
