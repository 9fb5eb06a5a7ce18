"""`make serve`: wsgiref with a thread per connection, at most IAAS_MAX_CONNECTIONS of them and
IAAS_MAX_CONNECTIONS_PER_ADDRESS of one address; each read bound by the request's deadlines.

The request line and headers must arrive within IAAS_HEADER_TIMEOUT and the whole request
within IAAS_REQUEST_TIMEOUT, except an image upload's body, which the app streams once it has
admitted the request: that body must then bring IAAS_UPLOAD_MIN_RATE over each window of
IAAS_REQUEST_TIMEOUT seconds, however long it takes in all.
"""
from __future__ import annotations

import io
import logging
import socket
import socketserver
import threading
import time
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from src import errors
from src.api.body_stream import START_BODY_KEY
from src.app import App
from src.servers.guards import ConnectionsByAddress, Limits, RateWindow, raw_answer

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("iaas.serve")

LISTEN_BACKLOG = 1024
SOCKET_TIMEOUT_S = 30  # writing an answer to a client that does not read
BUSY_WAIT_S = 1.0  # how long a connection beyond the cap waits for a thread
LINGER_S = 5.0  # how long a refused upload's body is drained so its answer arrives
LINGER_IDLE_S = 0.5  # ... but not while its client sends nothing: the thread is wanted


class DeadlineReader(io.RawIOBase):
    """A socket's reads, each allowed only the time left in the request's phase: headers, the
    rest of the request, or an upload's current rate window. With a fixed timeout per read, a
    client trickling a byte now and then could hold a thread for ever."""

    def __init__(self, sock: socket.socket, limits: Limits, write_timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._limits = limits
        self._started = time.monotonic()
        self._deadline = self._started + limits.header_timeout_s
        self._write_timeout_s = write_timeout_s
        self._window: RateWindow | None = None
        self._received = 0  # of the upload's body, once it streams

    def headers_done(self) -> None:
        """The headers have arrived: the rest is due by the whole request's deadline."""
        self._deadline = self._started + self._limits.request_timeout_s

    def stream_upload(self) -> None:
        """From now on the body must keep its minimum rate, whatever the deadline: a body the
        app admitted to stream (gigabytes) cannot arrive within one request's time."""
        self._window = RateWindow(self._limits.upload_min_rate, self._limits.request_timeout_s,
                                  time.monotonic())

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Raises: TimeoutError once the deadline has passed, BodyTooSlow (an upload's body
        brought too little in a window)."""
        while True:
            self._sock.settimeout(self._time_left())
            try:
                got = self._sock.recv_into(buffer)
            except TimeoutError:
                if self._window is None:
                    raise
                continue  # the window ended: _time_left judges it
            finally:  # writing the answer is not bound by the request's deadline
                self._sock.settimeout(self._write_timeout_s)
            self._received += got
            return got

    def _time_left(self) -> float:
        """Raises: TimeoutError, BodyTooSlow."""
        now = time.monotonic()
        if self._window is not None:
            return self._window.left(now, self._received)
        if now >= self._deadline:
            raise TimeoutError("the request did not arrive before its deadline")
        return self._deadline - now


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref with one thread per connection, at most max_connections of them and
    limits.per_address of one address."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the default of 5 drops connections under load
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler],
                 max_connections: int, limits: Limits) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.limits = limits
        self.addresses = ConnectionsByAddress(limits.per_address)
        self.api: App | None = None  # the app, for its route table
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusing = False  # read and written only by the accepting thread

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection if its address is under its cap and a thread frees
        within BUSY_WAIT_S; else 429 or 503, and close.

        Only the first connection of a busy spell waits: the wait stops the accepting thread,
        and a flood must not queue a fresh client behind one second per connection.
        """
        address = client_address[0]
        if not self.addresses.take(address):  # before any wait: the flood is answered at once
            refuse(request, errors.TooManyConnections(limit=self.limits.per_address))
            self.shutdown_request(request)
            return
        free = (self._slots.acquire(blocking=False) if self._refusing
                else self._slots.acquire(timeout=BUSY_WAIT_S))
        if not free:
            if not self._refusing:
                log.warning("refusing connections: %d are being served", self.max_connections)
            self._refusing = True
            self.addresses.give_back(address)
            refuse(request, errors.ServerBusy())
            self.shutdown_request(request)
            return
        self._refusing = False
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nothing else will give the slots back
            self._slots.release()
            self.addresses.give_back(address)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self.addresses.give_back(client_address[0])


def refuse(sock: socket.socket, error: errors.ApiError) -> None:
    """Answer error on a connection no thread serves; the client should retry."""
    try:
        sock.settimeout(BUSY_WAIT_S)
        sock.sendall(raw_answer(error))
        # Unread bytes at close would make the kernel reset the connection, and a reset can
        # destroy the answer before the client reads it: drain what has arrived.
        sock.setblocking(False)
        for _ in range(16):
            if not sock.recv(65536):
                break
    except OSError:  # nothing more to drain, or the client is gone
        pass


def linger(sock: socket.socket, seconds: float) -> None:
    """After the answer, read and drop what the client still sends, for at most seconds and
    while it keeps sending: closing with unread bytes resets the connection, and the reset can
    destroy the answer before the client reads it (a refused upload is answered while its body
    still comes). A client that sends nothing must not keep the thread."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, LINGER_IDLE_S))
            if not sock.recv(1024 * 1024):
                return
    except OSError:  # the client is gone, idle, or still sending at the end
        pass


class QuietHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_S
    server: ThreadingWSGIServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced: every read must respect the request's deadlines
        self._reader = DeadlineReader(self.connection, self.server.limits, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def get_environ(self) -> dict[str, Any]:
        self._reader.headers_done()
        environ: dict[str, Any] = super().get_environ()
        environ[START_BODY_KEY] = self._start_body
        api = self.server.api
        self._upload = api is not None and api.router.file_route(
            self.command, environ.get("PATH_INFO", "")) is not None
        return environ

    def _start_body(self) -> None:
        """The app streams this request's body (an admitted upload): its minimum rate from
        now on, and a client that waits for `100 Continue` (curl -T does) gets it."""
        self._reader.stream_upload()
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version != "HTTP/1.0":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def handle(self) -> None:
        self._upload = False
        try:
            super().handle()
        except TimeoutError:  # the request line or headers did not arrive in time: just close
            self.close_connection = True
        if self._upload:  # answered, maybe before the body was read (a refusal)
            linger(self.connection, LINGER_S)

    def log_message(self, format: str, *args: object) -> None:
        """The app logs one line per request itself."""


def make_dev_server(app: App, host: str, port: int) -> ThreadingWSGIServer:
    server = ThreadingWSGIServer((host, port), QuietHandler, app.config.max_connections,
                                 Limits.of(app.config))
    server.set_app(app)
    server.api = app
    app.waits.set_capacity(app.config.max_connections)
    app.intake.desk.set_capacity(app.config.max_connections)
    return server
