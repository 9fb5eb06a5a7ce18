"""Streamed request bodies: chunked decoding (wsgiref passes it raw), and bodies that end early."""
from __future__ import annotations

import io
from typing import Any

import pytest

from src import errors
from src.api.body_stream import ChunkedBody, open_body


def environ(raw: bytes, **extra: str) -> dict[str, Any]:
    return {"CONTENT_TYPE": "application/octet-stream", "wsgi.input": io.BufferedReader(
        io.BytesIO(raw)), **extra}


def drain(body: Any, size: int = 3) -> bytes:
    out = b""
    while chunk := body.read(size):
        out += chunk
    return out


def test_chunked_bodies_are_decoded_with_extensions_and_trailers() -> None:
    raw = b"5;name=x\r\nhello\r\n7\r\n, world\r\n0\r\nChecksum: abc\r\n\r\n"
    body = open_body(environ(raw, HTTP_TRANSFER_ENCODING="chunked"))
    assert isinstance(body, ChunkedBody) and drain(body) == b"hello, world"
    assert body.read(10) == b""


@pytest.mark.parametrize("raw, error", [
    (b"zz\r\nhello\r\n0\r\n\r\n", errors.BadRequest),
    (b"5\r\nhelloXX0\r\n\r\n", errors.BadRequest),
    (b"5\r\nhel", errors.IncompleteBody),
    (b"5\r\nhello\r\n", errors.IncompleteBody),
    (b"1" * 2000, errors.BadRequest),
])
def test_broken_chunked_bodies(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        drain(open_body(environ(raw, HTTP_TRANSFER_ENCODING="chunked")))


def test_a_body_shorter_than_its_length_is_incomplete() -> None:
    body = open_body(environ(b"abc", CONTENT_LENGTH="10"))
    with pytest.raises(errors.IncompleteBody):
        drain(body)


@pytest.mark.parametrize("extra", [
    {"HTTP_TRANSFER_ENCODING": "gzip"},
    {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "3"},
    {},
])
def test_odd_framing_is_refused(extra: dict[str, str]) -> None:
    with pytest.raises(errors.BadRequest):
        open_body(environ(b"abc", **extra))


def test_only_octet_stream() -> None:
    with pytest.raises(errors.UnsupportedMediaType):
        open_body({**environ(b""), "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "0"})
