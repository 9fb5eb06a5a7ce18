"""The one server entry point: `python -m src.serve [--server wsgiref|waitress]`.

wsgiref (`make serve`) gives every connection a thread, at most IAAS_MAX_CONNECTIONS of them,
and cuts a request that has not arrived whole within IAAS_REQUEST_TIMEOUT, except an image
upload's body, which the app streams once it has accepted the request: each of its reads may
then wait IAAS_REQUEST_TIMEOUT. waitress (`make serve-prod`) reads each request whole in its I/O
loop before a worker thread sees it (a large body into a temporary file), so slow or stalled
clients cost a socket, not a worker; only the body of an upload the app admitted from its
headers may be larger than 1 MiB there (src/upload_gate.py). Each server tells the app how many
threads it answers on, so that long-polls take at most half of them.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from waitress.server import BaseWSGIServer, create_server

from src import errors
from src.api.body_stream import START_BODY_KEY
from src.api.failures import error_body
from src.app import App, create_app
from src.config import Config, start_process
from src.upload_gate import UPLOAD_PATH, make_channel_class

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("iaas.serve")

LISTEN_BACKLOG = 1024
SOCKET_TIMEOUT_S = 30  # wsgiref: writing an answer to a client that does not read
BUSY_WAIT_S = 1.0  # wsgiref: how long a connection beyond the cap waits for a thread
BUSY_RETRY_AFTER_S = 1
CHANNEL_TIMEOUT_S = 30  # waitress: an idle or stalled connection is closed after this
CONNECTION_LIMIT = 1000
# waitress: bytes per socket read (its default, 8 KiB, caps an upload near 150 MiB/s here).
RECV_BYTES = 256 * 1024
MAX_BODY_BYTES = 1024 * 1024  # the app refuses over 64 KiB itself; this stops abuse earlier
LINGER_S = 5.0  # wsgiref: how long a refused upload's body is drained so its answer arrives


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


def make_prod_server(app: App, host: str, port: int, threads: int) -> BaseWSGIServer:
    server = create_server(
        app, host=host, port=port, threads=threads, ident="iaas",
        channel_timeout=CHANNEL_TIMEOUT_S, connection_limit=CONNECTION_LIMIT,
        max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True,
        recv_bytes=RECV_BYTES)
    assert isinstance(server, BaseWSGIServer)  # one listen address gives one server
    # waitress's extension point: the channel class a server makes for each connection.
    server.channel_class = make_channel_class(app, server.adj)
    app.waits.set_capacity(threads)
    return server


def bound_port(server: BaseWSGIServer) -> int:
    return int(server.getsockname()[1])


def _run(app: App, config: Config, kind: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(serve forever, close) for the chosen server, after saying where it listens."""
    if kind == "waitress":
        prod = make_prod_server(app, config.host, config.port, config.prod_threads)
        log.info("serving on http://%s:%d with waitress, %d threads (libvirt %s, network %s)",
                 config.host, bound_port(prod), config.prod_threads, config.libvirt_uri,
                 config.network)
        return prod.run, prod.close
    dev = make_dev_server(app, config.host, config.port)
    log.info("serving on http://%s:%d (libvirt %s, domain type %s, network %s)",
             config.host, dev.server_port, config.libvirt_uri, config.domain_type,
             config.network)
    return dev.serve_forever, dev.server_close


def _stop(_signum: int, _frame: FrameType | None) -> None:
    """Stop serving, once: a second SIGTERM (make passes its own to its child too) must not
    cut the clean-up short, where it left threads and the process running."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.serve")
    parser.add_argument("--server", choices=("wsgiref", "waitress"), default="wsgiref")
    args = parser.parse_args(argv)
    config = start_process(log)
    if config is None:
        return 2
    app = create_app(config)
    serve, close = _run(app, config, args.server)
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve()  # waitress itself returns on KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
