"""`make serve`: wsgiref with a thread per connection, at most IAAS_MAX_CONNECTIONS of them.

A request that has not arrived whole within IAAS_REQUEST_TIMEOUT is cut, except an image
upload's body, which the app streams once it has accepted the request: each of its reads may
then wait IAAS_REQUEST_TIMEOUT.
"""
from __future__ import annotations

import io
import json
import logging
import socket
import socketserver
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from src import errors
from src.api.body_stream import START_BODY_KEY
from src.api.failures import error_body
from src.app import App
from src.servers.upload_gate import UPLOAD_PATH

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("iaas.serve")

LISTEN_BACKLOG = 1024
SOCKET_TIMEOUT_S = 30  # writing an answer to a client that does not read
BUSY_WAIT_S = 1.0  # how long a connection beyond the cap waits for a thread
BUSY_RETRY_AFTER_S = 1
LINGER_S = 5.0  # how long a refused upload's body is drained so its answer arrives


class DeadlineReader(io.RawIOBase):
    """A socket's reads, each allowed only the time left before the request's deadline: with a
    fixed timeout per read, a client trickling a byte now and then could hold a thread for ever."""

    def __init__(self, sock: socket.socket, deadline: float, write_timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._write_timeout_s = write_timeout_s
        self._idle_s: float | None = None

    def go_idle(self, idle_s: float) -> None:
        """From now on each read may wait idle_s, whatever the deadline: a body the app has
        accepted to stream (an upload of gigabytes) cannot arrive within one request's time."""
        self._idle_s = idle_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Raises: TimeoutError once the deadline has passed (or a streamed body idles)."""
        left = self._deadline - time.monotonic() if self._idle_s is None else self._idle_s
        if left <= 0:
            raise TimeoutError("the request did not arrive before its deadline")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:  # writing the answer is not bound by the request's deadline
            self._sock.settimeout(self._write_timeout_s)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref with one thread per connection, at most max_connections of them, each request
    due whole within request_timeout_s."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the default of 5 drops connections under load
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler],
                 max_connections: int, request_timeout_s: float) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusing = False  # read and written only by the accepting thread

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection if one frees within BUSY_WAIT_S; else 503 and close.

        Only the first connection of a busy spell waits: the wait stops the accepting thread,
        and a flood must not queue a fresh client behind one second per connection.
        """
        free = (self._slots.acquire(blocking=False) if self._refusing
                else self._slots.acquire(timeout=BUSY_WAIT_S))
        if not free:
            if not self._refusing:
                log.warning("refusing connections: %d are being served", self.max_connections)
            self._refusing = True
            refuse(request)
            self.shutdown_request(request)
            return
        self._refusing = False
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nothing else will give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def refuse(sock: socket.socket) -> None:
    """Answer 503 server_busy on a connection no thread serves; the client should retry."""
    body = json.dumps(error_body(errors.ServerBusy()), separators=(",", ":")).encode()
    head = ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {BUSY_RETRY_AFTER_S}\r\n"
            f"X-Request-Id: req-{uuid.uuid4().hex}\r\nConnection: close\r\n\r\n")
    try:
        sock.settimeout(BUSY_WAIT_S)
        sock.sendall(head.encode() + body)
        # Unread bytes at close would make the kernel reset the connection, and a reset can
        # destroy the answer before the client reads it: drain what has arrived.
        sock.setblocking(False)
        for _ in range(16):
            if not sock.recv(65536):
                break
    except OSError:  # nothing more to drain, or the client is gone
        pass


def linger(sock: socket.socket, seconds: float) -> None:
    """After the answer, read and drop what the client still sends, for at most seconds:
    closing with unread bytes resets the connection, and the reset can destroy the answer
    before the client reads it (a refused upload is answered while its body still comes)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(1024 * 1024):
                return
    except OSError:  # the client is gone, or still sending at the end
        pass


class QuietHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_S
    server: ThreadingWSGIServer

    def setup(self) -> None:
        super().setup()
        deadline = time.monotonic() + self.server.request_timeout_s
        self.rfile.close()  # replaced: every read must respect the request's deadline
        self._reader = DeadlineReader(self.connection, deadline, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[START_BODY_KEY] = self._start_body
        self._upload = (self.command == "PUT"
                        and UPLOAD_PATH.fullmatch(environ.get("PATH_INFO", "")) is not None)
        return environ

    def _start_body(self) -> None:
        """The app streams this request's body: idle timeouts from now on, and a client that
        waits for `100 Continue` (curl -T does) gets it."""
        self._reader.go_idle(self.server.request_timeout_s)
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
                                 app.config.request_timeout_s)
    server.set_app(app)
    app.waits.set_capacity(app.config.max_connections)
    return server
