"""Request and Response: the small slice of WSGI the handlers need."""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import orjson

from src import errors
from src.api.body_stream import ADMISSION_KEY, ChunkedBody, FixedBody, open_body
from src.services.accounts.audit import Touched
from src.services.images.admissions import Admission
from src.services.rules.access import Principal

MAX_BODY_BYTES = 64 * 1024


class Request:
    """What a handler may read from one WSGI call."""

    def __init__(self, environ: dict[str, Any], request_id: str = "") -> None:
        self._environ = environ
        self.request_id = request_id
        self.principal: Principal | None = None  # set by the pipeline once the token checks out
        # An upload's admission (a server's, or the pipeline's), held until the request ends.
        self.upload: Admission | None = environ.get(ADMISSION_KEY)
        self._raw: bytes | None = None
        self.route = "unmatched"  # the matched route's pattern, for metrics and logs
        self.params: dict[str, Any] = {}  # the query, typed by the route's declaration
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.path: str = environ.get("PATH_INFO", "") or "/"
        self.query: dict[str, list[str]] = parse_qs(environ.get("QUERY_STRING", ""),
                                                    keep_blank_values=True)

    @property
    def target(self) -> str:
        """The path with its query string, as sent (?project= changes which VM a POST means)."""
        query = self._environ.get("QUERY_STRING", "")
        return f"{self.path}?{query}" if query else self.path

    def header(self, name: str) -> str | None:
        return self._environ.get("HTTP_" + name.upper().replace("-", "_"))

    @property
    def caller(self) -> Principal:
        """Who is calling a route that needs a token. Raises: Unauthorized."""
        if self.principal is None:
            raise errors.Unauthorized()
        return self.principal

    def json(self) -> Any:
        """The JSON body, read only after its declared size and type are acceptable.

        Raises: UnsupportedMediaType, BodyTooLarge, MalformedJson.
        """
        content_type = self._environ.get("CONTENT_TYPE", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise errors.UnsupportedMediaType(expected="application/json", content_type=content_type)
        return _parse(self.raw_body())

    def raw_body(self) -> bytes:
        """The body's bytes, read once and only if its declared size is acceptable.

        Raises: BadRequest, BodyTooLarge, IncompleteBody.
        """
        if self._raw is None:
            try:
                length = int(self._environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise errors.BadRequest(reason="Content-Length is not a number.") from None
            if length > MAX_BODY_BYTES:
                raise errors.BodyTooLarge(limit=MAX_BODY_BYTES)
            self._raw = _read_exactly(self._environ["wsgi.input"], length) if length > 0 else b""
        return self._raw

    def body_stream(self) -> FixedBody | ChunkedBody:
        """The body as a stream of application/octet-stream, for a route that takes a file:
        neither read whole nor bound by MAX_BODY_BYTES.

        Raises: UnsupportedMediaType, BadRequest.
        """
        return open_body(self._environ)

    def announced_length(self) -> int | None:
        """The body's Content-Length; None when it has none (chunked)."""
        text = self._environ.get("CONTENT_LENGTH") or ""
        return int(text) if text.isdigit() else None

    def optional_json(self) -> Any:
        """The JSON body, or {} when the request has none (no Content-Length, or 0)."""
        if not self._environ.get("CONTENT_LENGTH") or self._environ["CONTENT_LENGTH"] == "0":
            return {}
        return self.json()


def _read_exactly(stream: Any, length: int) -> bytes:
    """length bytes of stream. Raises: IncompleteBody when the client closed first, or when the
    server's request deadline (a socket timeout) passed first."""
    chunks: list[bytes] = []
    received = 0
    try:
        while received < length:
            chunk = stream.read(length - received)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except OSError:  # TimeoutError at the deadline, or the connection reset
        pass
    if received < length:
        raise errors.IncompleteBody(length=length)
    return b"".join(chunks)


def _parse(raw: bytes) -> Any:
    """Raises: MalformedJson."""
    try:
        value = json.loads(raw, parse_constant=_no_constants, parse_float=_number)
        # A "\ud800" escape parses into a string no UTF-8 can hold; refuse it here, not later.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except RecursionError:
        raise errors.MalformedJson(reason="nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.MalformedJson(reason=str(exc) if raw else "the body is empty") from None


def _number(text: str) -> float | int:
    """JSON has one number type: 2.0 is the integer 2 (as JSON Schema counts it), so it is one."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _no_constants(name: str) -> None:
    """NaN and Infinity are not JSON, whatever Python's parser accepts."""
    raise ValueError(f"{name} is not a JSON value")


@dataclass
class Response:
    status: int
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    touched: Touched | None = None  # what the service changed: the audit files it there

    def wsgi_status(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def encoded(self) -> Iterable[bytes]:
        if self.body is None:
            return [b""]
        if isinstance(self.body, bytes):  # a dashboard file, sent as it is
            return [self.body]
        if isinstance(self.body, str):
            return [self.body.encode()]
        return [orjson.dumps(self.body)]  # about 8x faster than json for a 1,000-VM list

