"""A request body read as a stream (an image upload): by Content-Length or chunked, a piece at a
time, never whole in memory; a body that stops early is 400 incomplete_body."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from src import errors

# The server's hook (src/servers/dev.py, wsgiref) that a body about to be streamed calls once:
# reads are then held to IAAS_UPLOAD_MIN_RATE instead of the whole request's deadline, and a
# client that sent `Expect: 100-continue` is told to go on.
START_BODY_KEY = "iaas.start_body"
# The upload a server admitted from the request's headers before it read the body (waitress,
# src/servers/upload_gate.py): the pipeline takes its caller and admits it no second time.
ADMISSION_KEY = "iaas.admission"
MAX_CHUNK_LINE = 1024
# RFC 9112 7.1: chunk-size is 1*HEXDIG, then chunk extensions (`;name[=value]`, ignored here),
# then CRLF. int(text, 16) alone also takes `-1`, `+1`, `0x10` and `1_0`, and a negative size
# made read() read the connection to its end into memory.
CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\x20-\x7e\t]*)?\r\n")
MALFORMED = "The chunked request body is malformed."


class BodyTooSlow(TimeoutError):
    """A server's read of an upload's body: it came slower than rate bytes/s over a window."""

    def __init__(self, rate: int, window_s: float) -> None:
        super().__init__(f"slower than {rate} bytes/s over {window_s} s")
        self.rate = rate
        self.window_s = window_s


def _too_slow(exc: BodyTooSlow) -> errors.ApiError:
    return errors.UploadTooSlow(rate=exc.rate, window_s=exc.window_s)


class FixedBody:
    """length bytes of stream."""

    def __init__(self, stream: Any, length: int, start: Callable[[], None]) -> None:
        self._stream = stream
        self._left = length
        self.length = length
        self._start: Callable[[], None] | None = start

    def read(self, size: int) -> bytes:
        """Up to size bytes; b"" at the end. Raises: IncompleteBody when the client stops
        first (it closed, or went idle past the timeout), UploadTooSlow."""
        _check_size(size)
        if self._start is not None:
            self._start()
            self._start = None
        if self._left <= 0:
            return b""
        try:
            chunk: bytes = self._stream.read(min(size, self._left))
        except BodyTooSlow as exc:
            raise _too_slow(exc) from None
        except OSError:  # TimeoutError when idle too long, or the connection reset
            chunk = b""
        if not chunk:
            raise errors.IncompleteBody(length=self.length)
        self._left -= len(chunk)
        return chunk


class ChunkedBody:
    """A `Transfer-Encoding: chunked` body, decoded (wsgiref passes it as it comes)."""

    def __init__(self, stream: Any, start: Callable[[], None]) -> None:
        self._stream = stream
        self._left = 0  # of the current chunk
        self._done = False
        self._start: Callable[[], None] | None = start

    def read(self, size: int) -> bytes:
        """Up to size decoded bytes; b"" after the last chunk.

        Raises: IncompleteBody (the client stopped first), BadRequest (not chunked encoding),
        UploadTooSlow.
        """
        _check_size(size)
        if self._start is not None:
            self._start()
            self._start = None
        if self._done:
            return b""
        try:
            if self._left == 0:
                self._left = self._next_size()
                if self._left == 0:
                    self._finish()
                    return b""
            chunk: bytes = self._stream.read(min(size, self._left))
            if not chunk:
                raise _ended()
            self._left -= len(chunk)
            if self._left == 0:
                self._expect(b"\r\n")
            return chunk
        except BodyTooSlow as exc:
            raise _too_slow(exc) from None
        except OSError:
            raise _ended() from None

    def _next_size(self) -> int:
        """The next chunk's size. Raises: BadRequest (not a chunk-size line)."""
        found = CHUNK_SIZE_LINE.fullmatch(self._line())
        if found is None:
            raise errors.BadRequest(reason=MALFORMED)
        return int(found.group(1), 16)

    def _finish(self) -> None:
        """Skip the trailer fields up to the empty line that ends the body."""
        while self._line().strip():
            pass
        self._done = True

    def _expect(self, wanted: bytes) -> None:
        got = self._stream.read(len(wanted))
        if got != wanted:
            if len(got) < len(wanted):
                raise _ended()
            raise errors.BadRequest(reason=MALFORMED)

    def _line(self) -> bytes:
        line: bytes = self._stream.readline(MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            if len(line) >= MAX_CHUNK_LINE:
                raise errors.BadRequest(reason=MALFORMED)
            raise _ended()
        return line


def _check_size(size: int) -> None:
    """A streamed body is read a piece at a time: read(-1) would read the connection to its end
    into memory. Raises: ValueError."""
    if size < 1:
        raise ValueError(f"a streamed body is read in pieces of at least 1 byte, not {size}")


def _ended() -> errors.ApiError:
    return errors.IncompleteBody("The chunked request body ended before its last chunk.",
                                 length=None)


def open_body(environ: dict[str, Any]) -> FixedBody | ChunkedBody:
    """The request's body as a stream, by Content-Length or chunked.

    Raises: UnsupportedMediaType (not application/octet-stream), BadRequest.
    """
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.split(";")[0].strip().lower() != "application/octet-stream":
        raise errors.UnsupportedMediaType(expected="application/octet-stream",
                                          content_type=content_type)
    start = environ.get(START_BODY_KEY) or (lambda: None)
    encoding = environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
    length_text = environ.get("CONTENT_LENGTH") or ""
    if encoding:
        if encoding != "chunked" or length_text:
            raise errors.BadRequest(reason="Send Content-Length or Transfer-Encoding: chunked, "
                                           "not both (and no other transfer coding).")
        return ChunkedBody(environ["wsgi.input"], start)
    if not length_text.isdigit():
        raise errors.BadRequest(reason="An upload needs Content-Length or Transfer-Encoding: "
                                       "chunked.")
    return FixedBody(environ["wsgi.input"], int(length_text), start)
