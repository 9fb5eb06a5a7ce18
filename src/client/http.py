"""The API over HTTP, and nothing else: JSON calls, raw answers, streamed uploads.

Only the standard library's http.client: a proxy set in the environment is never used, so a call
meant for the API never goes anywhere else.
"""
from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

TIMEOUT_S = 90.0  # above the longest long-poll the API holds (60 s)
CHUNK = 256 * 1024
Progress = Callable[[int], None]


@dataclass
class Answer:
    """One HTTP answer: status, headers (lower-case names) and the body as sent."""

    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")


@dataclass
class Refused(Exception):
    """The API answered with an error: its code, message and request id."""

    status: int
    code: str
    message: str
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class Unreachable(Exception):
    """No answer from the API at all (refused, reset, timed out, unknown host)."""

    url: str
    reason: str

    def __str__(self) -> str:
        return f"the API at {self.url} does not answer: {self.reason}"


def _send_all(conn: http.client.HTTPConnection, stream: BinaryIO, progress: Progress) -> None:
    sent = 0
    while chunk := stream.read(CHUNK):
        conn.send(chunk)
        sent += len(chunk)
        progress(sent)


def _refusal(answer: Answer) -> Refused:
    try:
        error = answer.json()["error"]
        return Refused(answer.status, str(error["code"]), str(error["message"]),
                       answer.request_id, error.get("details") or {})
    except (ValueError, KeyError, TypeError):
        return Refused(answer.status, f"http_{answer.status}", answer.text[:200] or "no body",
                       answer.request_id)


class Api:
    """Calls to one API base URL with one bearer token (or none)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"IAAS_URL must be http(s)://host[:port], not {url!r}")
        self._parts = parts
        self._token = token

    def _connection(self) -> http.client.HTTPConnection:
        kind = (http.client.HTTPSConnection if self._parts.scheme == "https"
                else http.client.HTTPConnection)
        return kind(self._parts.hostname or "", self._parts.port, timeout=TIMEOUT_S)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "iaas-cli"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def send(self, method: str, path: str, body: Any = None,
             query: dict[str, Any] | None = None) -> Answer:
        """One call; an error status raises. Raises: Refused, Unreachable."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = self._headers("application/json" if payload is not None else None)
        return self._exchange(method, self._target(path, query), payload, headers)

    def upload(self, path: str, stream: BinaryIO, size: int, progress: Progress) -> Answer:
        """PUT a file as application/octet-stream in chunks, telling progress the bytes sent.

        Raises: Refused, Unreachable.
        """
        headers = {**self._headers("application/octet-stream"), "Content-Length": str(size)}
        conn = self._connection()
        try:
            conn.putrequest("PUT", self._target(path, None), skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            _send_all(conn, stream, progress)
            return self._answer(conn.getresponse())
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server may refuse before reading it all (too large, not allowed): its answer
            # says why, when it is there to read.
            raise self._refusal_after(conn) or Unreachable(self.url, str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        finally:
            conn.close()

    def _refusal_after(self, conn: http.client.HTTPConnection) -> Refused | None:
        try:
            self._answer(conn.getresponse())
        except Refused as refused:
            return refused
        except (OSError, http.client.HTTPException):
            return None
        return None

    def _target(self, path: str, query: dict[str, Any] | None) -> str:
        prefix = self._parts.path.rstrip("/")
        wanted = {key: value for key, value in (query or {}).items() if value is not None}
        return prefix + path + ("?" + urlencode(wanted) if wanted else "")

    def _exchange(self, method: str, target: str, payload: bytes | None,
                  headers: dict[str, str]) -> Answer:
        conn = self._connection()
        try:
            conn.request(method, target, body=payload, headers=headers)
            return self._answer(conn.getresponse())
        except (OSError, http.client.HTTPException) as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else str(exc)
            raise Unreachable(self.url, reason or type(exc).__name__) from None
        finally:
            conn.close()

    @staticmethod
    def _answer(response: http.client.HTTPResponse) -> Answer:
        # Closed here rather than by its finalizer: a Ctrl-C whose handler runs inside a
        # finalizer is dropped by CPython (waiting.CtrlC notes it anyway).
        with response:
            answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                            response.read())
        if answer.status >= 400:
            raise _refusal(answer)
        return answer
