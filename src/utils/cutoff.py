"""A download's limits enforced from outside the thread that reads it: a watch thread shuts its
socket down (so a read blocked on a server that drips bytes returns at once) when the headers
take too long in all, when the body comes too slowly, or when its owner says it must stop."""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)
Reason = tuple[str, str]  # (error code, message)
MAX_TICK_S = 1.0  # how often the watch looks, at most this far apart


@dataclass(frozen=True)
class Pace:
    """How fast a server must be: the connection, the request, the status line and the headers
    within header_timeout_s in all; then at least min_bytes of body in every window_s (0: no
    minimum)."""

    header_timeout_s: float = 60.0
    min_bytes: int = 1024 ** 2
    window_s: float = 60.0


class Cutoff:
    """One download's watch. `ask` is asked at every look for a reason to stop (its owner's
    deadline, a cancel); the first reason found, or given to stop(), is kept in `reason` and
    the attached socket is shut down."""

    def __init__(self, pace: Pace, ask: Callable[[], Reason | None] = lambda: None) -> None:
        self._pace = pace
        self._ask = ask
        self._tick_s = max(0.05, min(MAX_TICK_S, pace.window_s / 4, pace.header_timeout_s / 4))
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._sock: socket.socket | None = None  # a duplicate of the download's socket
        self._headers_by: float | None = time.monotonic() + pace.header_timeout_s
        self._received = 0
        self._samples: deque[tuple[float, int]] = deque()  # (when, bytes received by then)
        self.reason: Reason | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True, name="download-watch")
        self._thread.start()

    def header_time_left(self) -> float:
        """Seconds left of the header deadline (a connect waits no longer)."""
        return max(0.0, (self._headers_by or time.monotonic()) - time.monotonic())

    def attach(self, sock: socket.socket) -> None:
        """Watch sock (the socket of the download's current request) instead of the last one.

        A duplicate is kept, so a TLS wrapper taking sock over changes nothing, and the socket
        cannot close (and its number be reused) under the watch.
        """
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._sock = sock.dup()
            stopped = self.reason is not None
        if stopped:
            self._shut()

    def headers_done(self) -> None:
        """The final response's headers arrived: the body's minimum rate applies from now."""
        with self._lock:
            self._headers_by = None
            self._samples.append((time.monotonic(), self._received))

    def count(self, size: int) -> None:
        """size more bytes of body arrived."""
        with self._lock:
            self._received += size

    def stop(self, code: str, message: str) -> None:
        """Cut the download short: the first reason given is the one kept."""
        with self._lock:
            if self.reason is None:
                self.reason = (code, message)
        self._shut()

    def close(self) -> None:
        """End the watch and let the socket go."""
        self._ended.set()
        self._thread.join(timeout=5)
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _shut(self) -> None:
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected yet, or already closed by the peer

    def _watch(self) -> None:
        while not self._ended.wait(self._tick_s):
            try:
                reason = self._too_slow() or self._ask()
            except Exception:  # the watch must go on: a failed look is no reason to stop
                log.exception("a download's watch could not look")
                continue
            if reason is not None:
                self.stop(*reason)
                return

    def _too_slow(self) -> Reason | None:
        now = time.monotonic()
        with self._lock:
            if self._headers_by is not None:
                if now >= self._headers_by:
                    return ("download_failed", (f"no status line and headers within "
                            f"{self._pace.header_timeout_s:g} s"))
                return None
            if not self._pace.min_bytes:
                return None
            self._samples.append((now, self._received))
            window_start = now - self._pace.window_s
            while len(self._samples) > 1 and self._samples[1][0] <= window_start:
                self._samples.popleft()
            since, then = self._samples[0]
            if since <= window_start and self._received - then < self._pace.min_bytes:
                return ("download_failed", (f"{self._received - then} bytes in the last "
                        f"{now - since:.0f} s, fewer than {self._pace.min_bytes}"))
            return None
