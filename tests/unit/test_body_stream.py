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


class Recording(io.BytesIO):
    """A stream that fails a test if it is ever asked for a negative size (to its end)."""

    def read(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size >= 0, f"read({size}) reads the connection to its end"
        return super().read(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size >= 0, f"readline({size})"
        return super().readline(size)


@pytest.mark.parametrize("size_line", [b"-1", b"+1", b"0x1", b"0x10", b"1_0", b"-0", b" 1", b"1 1",
                                       b"\xef\xbc\x91", b"1" * 17, b""])
def test_only_hexdig_chunk_sizes_are_read(size_line: bytes) -> None:
    """RFC 9112: chunk-size = 1*HEXDIG. Python's int(text, 16) takes the first four too, and a
    size of -1 made the server read the rest of the connection into memory."""
    try:  # a body that a lenient parser would decode whole: only the size line is wrong
        lenient = min(max(int(size_line, 16), 1), 1024)
    except ValueError:
        lenient = 16
    raw = size_line + b"\r\n" + bytes(lenient) + b"\r\n0\r\n\r\n"
    body = ChunkedBody(Recording(raw), lambda: None)
    with pytest.raises(errors.BadRequest) as refused:
        drain(body, 1024)
    assert refused.value.status == 400 and refused.value.code == "bad_request"
    assert refused.value.message == "The chunked request body is malformed."


@pytest.mark.parametrize("size_line", [b"a", b"A", b"0000000000000010", b"10 ;ext=1",
                                       b"10;a=\"b c\";d"])
def test_hexdig_sizes_with_or_without_extensions_are_read(size_line: bytes) -> None:
    size = int(size_line.split(b";")[0], 16)
    raw = size_line + b"\r\n" + bytes(size) + b"\r\n0\r\n\r\n"
    assert drain(ChunkedBody(Recording(raw), lambda: None), 1024) == bytes(size)


def test_a_size_line_ends_with_crlf() -> None:
    with pytest.raises(errors.BadRequest):
        drain(ChunkedBody(Recording(b"5\nhello\r\n0\r\n\r\n"), lambda: None))


@pytest.mark.parametrize("size", [0, -1])
def test_a_streamed_body_is_never_read_to_its_end(size: int) -> None:
    for body in (ChunkedBody(Recording(b"5\r\nhello\r\n0\r\n\r\n"), lambda: None),
                 open_body(environ(b"hello", CONTENT_LENGTH="5"))):
        with pytest.raises(ValueError):
            body.read(size)


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
