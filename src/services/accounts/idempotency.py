"""Idempotency-Key: the same key and body within 24 h gets the first answer, never a second VM.

Keys belong to the token that sent them. The key is claimed with a placeholder row in a BEGIN
IMMEDIATE transaction, so of two concurrent requests only one runs; the other waits for its
answer and replays it. Only successes are kept: a refusal (a quota, no capacity, a bad body)
created nothing, so a retry runs again and may succeed once the cause is gone.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from src import errors
from src.database import idempotency as key_dao
from src.database.db import Database
from src.utils.clock import utc_after, utc_now

TTL_S = 24 * 3600
ABANDONED_S = 600  # a claim with no answer this old belongs to a request that died
WAIT_S = 30.0  # how long a duplicate waits for the first request's answer
POLL_S = 0.05
MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any
    headers: list[tuple[str, str]]
    content_type: str


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()


def check_key(key: str) -> None:
    """Raises: BadRequest unless key is 1-255 printable ASCII characters."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all("!" <= char <= "~" for char in key):
        raise errors.BadRequest(reason="Idempotency-Key must be 1-255 printable ASCII characters.")


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def begin(self, token_id: str, key: str, digest: str) -> StoredResponse | None:
        """The stored answer to replay, or None when this request is the first and must run.

        Raises: IdempotencyKeyReused, IdempotencyKeyInUse.
        """
        deadline = time.monotonic() + WAIT_S
        while True:
            with self._db.write() as conn:
                key_dao.purge_older_than(conn, utc_after(-TTL_S))
                key_dao.drop_unanswered_claim(conn, token_id, key, utc_after(-ABANDONED_S))
                row = key_dao.get(conn, token_id, key)
                if row is None:
                    key_dao.claim(conn, token_id, key, digest, utc_now())
                    return None
            if row.request_hash != digest:
                raise errors.IdempotencyKeyReused()
            if row.status is not None and row.response is not None:
                stored = json.loads(row.response)
                return StoredResponse(status=row.status, body=stored["body"],
                                      headers=[tuple(pair) for pair in stored["headers"]],
                                      content_type=stored["content_type"])
            if time.monotonic() >= deadline:
                raise errors.IdempotencyKeyInUse()
            time.sleep(POLL_S)

    def finish(self, token_id: str, key: str, response: StoredResponse) -> None:
        """Keep a success for replays; drop the claim of anything else, so a retry runs."""
        with self._db.write() as conn:
            if not 200 <= response.status < 300:
                key_dao.release(conn, token_id, key)
                return
            key_dao.store_answer(conn, token_id, key, response.status, json.dumps({
                "body": response.body, "headers": response.headers,
                "content_type": response.content_type}))
