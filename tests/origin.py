"""An HTTP server of the tests' own on 127.0.0.1 that image imports fetch from, fast, slowly,
or as an attacker's server would (dripping its headers or its body a byte at a time)."""
from __future__ import annotations

import select
import subprocess
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from src.config import Config

ODD_REDIRECTS = {"/non-ascii": "/\xe9", "/space": "/a b", "/broken": "http://[::1/x"}
DRIP_BODY_BYTES = 64 * 1024 ** 2  # what /drip-body announces (and never sends)


def reaching_origin(config: Config) -> Config:
    """config with imports let through to an Origin: 127.0.0.1 on any port (tests only)."""
    return replace(config, import_allow_private=True, import_ports="1-65535")


def full_qcow2(path: Path) -> Path:
    """A qcow2 of 8 MiB, every byte written (so it takes a while to serve slowly)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full",
                    str(path), "8M"], check=True)
    return path


class Origin:
    """An HTTP server on 127.0.0.1 serving one image file, slowly if asked, and some failures."""

    def __init__(self, image: Path, pause_s: float = 0.0, drip_s: float = 0.2,
                 drip_for_s: float = 60.0) -> None:
        self.data = image.read_bytes()
        self.pause_s = pause_s
        self.drip_s = drip_s  # /drip-*: one byte this often...
        self.drip_for_s = drip_for_s  # ...for at most this long (a test never hangs on one)
        self.requests: list[str] = []
        self.dripping: set[str] = set()  # paths of drips whose connection is open
        self.closed: list[str] = []  # paths of drips the importer closed the connection of
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.requests.append(self.path)
                origin.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if path == "/loop":
            handler.send_response(302)
            handler.send_header("Location", "/loop")
            handler.end_headers()
        elif path == "/moved":
            handler.send_response(301)
            handler.send_header("Location", f"{self.url}/image.qcow2")
            handler.end_headers()
        elif path in ODD_REDIRECTS:  # Locations http.client cannot send, or urlsplit read
            handler.send_response(302)
            handler.send_header("Location", ODD_REDIRECTS[path])
            handler.end_headers()
        elif path == "/no-length":  # the body ends when the connection closes
            handler.send_response(200)
            handler.end_headers()
            self._send(handler, self.data)
        elif path.startswith("/slow-redirect/"):  # N hops, each answered after drip_s
            hops = int(path.rsplit("/", 1)[1])
            time.sleep(self.drip_s)
            handler.send_response(302)
            handler.send_header("Location", f"/slow-redirect/{hops - 1}" if hops > 1
                                else "/image.qcow2")
            handler.end_headers()
        elif path.startswith("/drip-headers"):  # a status line, then a header without end
            self._drip(handler, b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a")
        elif path.startswith("/drip-body"):
            self._drip(handler, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                       % DRIP_BODY_BYTES, b"\0")
        elif path in ("/image.qcow2", "/drop"):
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(self.data)))
            handler.end_headers()
            self._send(handler, self.data[:len(self.data) // 2] if path == "/drop" else self.data)
        else:
            handler.send_error(404)

    def _send(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        piece = max(1, len(data) // 20)
        try:
            for start in range(0, len(data), piece):
                handler.wfile.write(data[start:start + piece])
                handler.wfile.flush()
                time.sleep(self.pause_s)
        except OSError:
            pass  # the importer went away (a cancel)
        handler.close_connection = True

    def _drip(self, handler: BaseHTTPRequestHandler, start: bytes, drop: bytes) -> None:
        """start, then drop every drip_s until the importer closes the connection (recorded
        in closed), drip_for_s has passed or the origin stops."""
        connection = handler.connection
        closed = False
        until = time.monotonic() + self.drip_for_s
        with self._lock:
            self.dripping.add(handler.path)
        try:
            connection.sendall(start)
            while not closed and not self._stopping.is_set() and time.monotonic() < until:
                readable, _, _ = select.select([connection], [], [], self.drip_s)
                closed = bool(readable) and not connection.recv(4096)  # the importer's FIN
                if not closed:
                    connection.sendall(drop)
        except OSError:
            closed = True  # reset by the importer
        finally:
            with self._lock:
                self.dripping.discard(handler.path)
                if closed:
                    self.closed.append(handler.path)
        handler.close_connection = True

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
