"""`make serve-prod`: waitress, with IAAS_PROD_THREADS worker threads behind its I/O loop, at
most IAAS_PROD_CONNECTIONS connections and IAAS_MAX_CONNECTIONS_PER_ADDRESS of one address.

waitress reads each request whole in its I/O loop before a worker thread sees it (a large body
into a temporary file), so a slow client costs a socket, not a worker; but its own timeout is
an idle one, and a client dripping a byte now and then would keep its socket for ever. So its
sweep (every CLEANUP_INTERVAL_S) also closes a connection whose request line and headers are
later than IAAS_HEADER_TIMEOUT, whose request is later than IAAS_REQUEST_TIMEOUT, and answers
408 to an admitted upload whose body falls below IAAS_UPLOAD_MIN_RATE.
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
from src.servers.guards import ConnectionsByAddress, Limits, too_many_connections
from src.servers.upload_gate import (
    AdmittedTask,
    AppRefusal,
    UploadParser,
    make_parser_class,
)

log = logging.getLogger("iaas.serve")

CHANNEL_TIMEOUT_S = 30  # an idle connection (between requests) is closed after this
CLEANUP_INTERVAL_S = 1  # how often the deadlines are checked (waitress's default is 30 s)
# Bytes per socket read (waitress's default, 8 KiB, caps an upload near 150 MiB/s here).
RECV_BYTES = 256 * 1024
MAX_BODY_BYTES = 1024 * 1024  # the app refuses over 64 KiB itself; this stops abuse earlier


class GuardedChannel(HTTPChannel):
    """A connection held to the request deadlines, refused at once when its address holds its
    share; requests never served (the client left mid-body, or with requests still queued)
    give their uploads' admissions back here."""

    addresses: ConnectionsByAddress  # set by the subclass make_channel_class builds
    limits: Limits
    task_class = AdmittedTask

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.began = time.monotonic()
        self.served = False  # a request began: silence between requests is idleness
        self.counted = self.addresses.take(addr[0])
        if not self.counted:
            self._answer_and_close(too_many_connections(self.limits))

    def _answer_and_close(self, answer: bytes) -> None:
        with self.outbuf_lock:
            self.outbufs[-1].append(answer)
            self.total_outbufs_len += len(answer)
        self.close_when_flushed = True

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        if self.counted:
            self.counted = False
            self.addresses.give_back(self.addr[0])

    def received(self, data: bytes) -> bool:
        first, self.served = not self.served, True
        done: bool = super().received(data)
        if first and isinstance(self.request, UploadParser):
            # The first request's deadlines run from the connection's start, as on wsgiref: a
            # client that waits before its first byte gets no more time for its headers.
            self.request.began = self.began
        return done

    def enforce(self, now: float) -> None:
        """Close (or, an upload too slow, answer 408) a connection past its deadline; one
        whose request a worker serves is left alone (its client has sent it whole)."""
        if self.requests or self.will_close or self.close_when_flushed:
            return
        request = self.request
        if not isinstance(request, UploadParser):  # no byte of a request yet
            if not self.served and now - self.began > self.limits.header_timeout_s:
                self.will_close = True
            return
        if not request.headers_finished:
            if now - request.began > self.limits.header_timeout_s:
                self.will_close = True
        elif request.window is not None:
            try:
                request.window.left(now, request.body_bytes_received)
            except BodyTooSlow as exc:
                self._refuse_partial(request, errors.UploadTooSlow(rate=exc.rate,
                                                                   window_s=exc.window_s))
        elif now - request.began > self.limits.request_timeout_s:
            self.will_close = True

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
    """waitress's TCP server whose sweep also enforces the request deadlines."""

    addresses: ConnectionsByAddress

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
    return type("ServerChannel", (GuardedChannel,), {
        "parser_class": parser, "limits": limits,
        "addresses": ConnectionsByAddress(limits.per_address)})


def make_prod_server(app: App, host: str, port: int, threads: int) -> GuardedServer:
    adj = Adjustments(
        host=host, port=port, threads=threads, ident="iaas", channel_timeout=CHANNEL_TIMEOUT_S,
        cleanup_interval=CLEANUP_INTERVAL_S, connection_limit=app.config.prod_connections,
        max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True,
        recv_bytes=RECV_BYTES, asyncore_use_poll=True)  # select() fails past descriptor 1023
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    server = GuardedServer(app, dispatcher=dispatcher, adj=adj)
    channel_class = make_channel_class(app, adj)
    server.channel_class = channel_class
    server.addresses = channel_class.addresses
    app.waits.set_capacity(threads)
    app.intake.desk.set_capacity(threads)
    return server


def bound_port(server: GuardedServer) -> int:
    return int(server.getsockname()[1])
