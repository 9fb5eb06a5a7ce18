"""An HTTP server of the tests' own on 127.0.0.1 that image imports fetch from."""
from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ODD_REDIRECTS = {"/non-ascii": "/\xe9", "/space": "/a b", "/broken": "http://[::1/x"}


def full_qcow2(path: Path) -> Path:
    """A qcow2 of 8 MiB, every byte written (so it takes a while to serve slowly)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full",
                    str(path), "8M"], check=True)
    return path


class Origin:
    """An HTTP server on 127.0.0.1 serving one image file, slowly if asked, and some failures."""

    def __init__(self, image: Path, pause_s: float = 0.0) -> None:
        self.data = image.read_bytes()
        self.pause_s = pause_s
        self.requests: list[str] = []
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

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
