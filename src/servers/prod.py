"""`make serve-prod`: waitress, with IAAS_PROD_THREADS worker threads behind its I/O loop.

waitress reads each request whole in its I/O loop before a worker thread sees it (a large body
into a temporary file), so a slow client costs a socket, not a worker; only the body of an
upload the app admitted from its headers may be larger than 1 MiB there
(src/servers/upload_gate.py). Such a body may take hours, and waitress's own timeout is an idle
one: so its sweep (every CLEANUP_INTERVAL_S) also answers 408 to an admitted upload whose body
falls below IAAS_UPLOAD_MIN_RATE.
"""
from __future__ import annotations

import logging
import time
from typing import Any, cast

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from src import errors
from src.api.body_stream import BodyTooSlow
from src.app import App
from src.servers.guards import Limits
from src.servers.upload_gate import (
    AdmittedTask,
    AppRefusal,
    UploadParser,
    make_parser_class,
)

log = logging.getLogger("iaas.serve")

CHANNEL_TIMEOUT_S = 30  # an idle or stalled connection is closed after this
CLEANUP_INTERVAL_S = 1  # how often the rate is checked (waitress's default is 30 s)
CONNECTION_LIMIT = 1000
# Bytes per socket read (waitress's default, 8 KiB, caps an upload near 150 MiB/s here).
RECV_BYTES = 256 * 1024
MAX_BODY_BYTES = 1024 * 1024  # the app refuses over 64 KiB itself; this stops abuse earlier


class GuardedChannel(HTTPChannel):
    """A connection whose admitted upload is held to its minimum rate; requests never served
    (the client left mid-body, or with requests still queued) give their uploads' admissions
    back here."""

    task_class = AdmittedTask

    def enforce(self, now: float) -> None:
        """Answer 408 to an admitted upload whose body came too slowly in its last window."""
        if self.requests or self.will_close or self.close_when_flushed:
            return
        request = self.request
        if (isinstance(request, UploadParser) and request.headers_finished
                and request.window is not None):
            try:
                request.window.left(now, request.body_bytes_received)
            except BodyTooSlow as exc:
                self._refuse_partial(request, errors.UploadTooSlow(rate=exc.rate,
                                                                   window_s=exc.window_s))

    def _refuse_partial(self, request: UploadParser, error: errors.ApiError) -> None:
        """Answer error to the request being read, as waitress answers a parse error: it ends
        now, and so does the connection."""
        log.info("cut an upload's body: %d %s", error.status, error.code)
        # The stubs omit requests_lock, type requests a Sequence and add_task's argument a Task.
        with self.requests_lock:  # type: ignore[attr-defined]
            request.error = AppRefusal(error)
            request.completed = True
            request.expect_continue = False
            cast(list[UploadParser], self.requests).append(request)
            self.request = None
            self.server.add_task(self)  # type: ignore[arg-type]

    def handle_close(self) -> None:
        self._release_unserved()
        super().handle_close()

    def service(self) -> None:
        super().service()
        if not self.connected:  # waitress leaves the rest of a gone client's queue unserved
            self._release_unserved()

    def _release_unserved(self) -> None:
        with self.requests_lock:  # type: ignore[attr-defined]  # the stubs omit it
            unserved = [self.request, *self.requests]
        for request in unserved:
            if isinstance(request, UploadParser):
                request.release()


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server whose sweep also enforces the uploads' minimum rate."""

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # time.time(); the stubs say int
        monotonic = time.monotonic()
        channels: dict[int, HTTPChannel] = self.active_channels  # type: ignore[assignment]
        for channel in list(channels.values()):
            if isinstance(channel, GuardedChannel):
                channel.enforce(monotonic)


def make_channel_class(app: App, adj: Any) -> type[GuardedChannel]:
    """The channel class (waitress's extension point) for a server of app."""
    limits = Limits.of(app.config)
    parser = make_parser_class(app.admit_upload, adj, limits)
    return type("ServerChannel", (GuardedChannel,), {"parser_class": parser})


def make_prod_server(app: App, host: str, port: int, threads: int) -> GuardedServer:
    adj = Adjustments(
        host=host, port=port, threads=threads, ident="iaas", channel_timeout=CHANNEL_TIMEOUT_S,
        cleanup_interval=CLEANUP_INTERVAL_S, connection_limit=CONNECTION_LIMIT,
        max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True,
        recv_bytes=RECV_BYTES)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    server = GuardedServer(app, dispatcher=dispatcher, adj=adj)
    server.channel_class = make_channel_class(app, adj)
    app.waits.set_capacity(threads)
    app.intake.desk.set_capacity(threads)
    return server


def bound_port(server: GuardedServer) -> int:
    return int(server.getsockname()[1])
