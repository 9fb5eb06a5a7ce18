"""Image uploads to a live server (PUT /v1/images/{id}/file), by Content-Length or chunked,
from a file or from generated pieces, and a server in a child process whose memory can be read;
tests and the upload benchmark share them."""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from scripts.harness.servers import Reply, decode_body, host_xml
from src.database.db import Database
from src.services.accounts.auth import TokenService

PIECE = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent.parent


def _split(base_url: str) -> tuple[str, int]:
    host, _, port = base_url.removeprefix("http://").partition(":")
    return host, int(port)


def put_file(base_url: str, token: str, image: str, body: Path | Iterable[bytes], *,
             length: int | None = None, timeout_s: float = 300) -> Reply:
    """Upload body: a file (sent with its Content-Length), or pieces (chunked unless length
    is given). Error statuses are returned as replies."""
    host, port = _split(base_url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s, blocksize=PIECE)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    try:
        if isinstance(body, Path):
            with body.open("rb") as data:
                headers["Content-Length"] = str(body.stat().st_size)
                connection.request("PUT", f"/v1/images/{image}/file", body=data, headers=headers)
                return _reply(connection.getresponse())
        if length is not None:
            headers["Content-Length"] = str(length)
        connection.request("PUT", f"/v1/images/{image}/file", body=iter(body), headers=headers,
                           encode_chunked=length is None)
        return _reply(connection.getresponse())
    finally:
        connection.close()


def _reply(response: http.client.HTTPResponse) -> Reply:
    headers = dict(response.getheaders())
    return Reply(response.status, headers, decode_body(headers, response.read()))


def zeros(total: int, piece: int = PIECE) -> Iterator[bytes]:
    """total zero bytes in pieces (a sparse disk's worth, without a file)."""
    block = bytes(piece)
    sent = 0
    while sent < total:
        size = min(piece, total - sent)
        yield block if size == piece else bytes(size)
        sent += size


def send_then_close(base_url: str, token: str, image: str, announced: int,
                    sent: bytes) -> bytes:
    """Announce announced bytes, send only sent, close our side; whatever the server said."""
    host, port = _split(base_url)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall((f"PUT /v1/images/{image}/file HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {token}\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      f"Content-Length: {announced}\r\n\r\n").encode() + sent)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


class ChildServer:
    """`python -m src.serve` in a child process on a 127.0.0.1 port the kernel picks (it says
    which: a port chosen here and bound there could be taken meanwhile by another run), so a
    test can read its memory (/proc/<pid>/status); environ carries its IAAS_* settings."""

    def __init__(self, environ: dict[str, str], log: Path, server: str = "wsgiref") -> None:
        self.log = log
        env = {**os.environ, **environ, "IAAS_HOST": "127.0.0.1", "IAAS_PORT": "0"}
        with log.open("wb") as out:  # a file, not a pipe: nobody reads it while it serves
            self.process = subprocess.Popen(
                [sys.executable, "-m", "src.serve", "--server", server], cwd=REPO, env=env,
                stdout=subprocess.DEVNULL, stderr=out)
        self.port = self._wait_until_up()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_until_up(self, deadline_s: float = 30) -> int:
        """The port the server says it serves on (it listens by then)."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited: " + self.log.read_text()[-2000:])
            said = re.search(r"serving on http://127\.0\.0\.1:(\d+)",
                             self.log.read_text(errors="replace"))
            if said:
                return int(said[1])
            time.sleep(0.1)
        raise RuntimeError("the server did not start listening")

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (the peak so far) of the server process, in KiB."""
        found = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found

    def call(self, token: str, method: str, path: str, body: Any = None) -> Reply:
        host, port = _split(self.url)
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/json"})
            return _reply(connection.getresponse())
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def child_on_test_driver(root: Path, kind: str, network: str) -> tuple[ChildServer, str]:
    """`python -m src.serve --server kind` in a child process on a test-driver host under root
    (which must exist), and an admin token; waitress's temporary files go to root too."""
    (root / "host.xml").write_text(host_xml(network))
    (root / "images").mkdir()
    db = Database(root / "iaas.db")
    db.migrate()
    token = TokenService(db, {}).issue("default", "admin")[1]
    server = ChildServer({
        "IAAS_DB_PATH": str(root / "iaas.db"), "IAAS_LIBVIRT_URI": f"test://{root}/host.xml",
        "IAAS_DOMAIN_TYPE": "test", "IAAS_NETWORK": network,
        "IAAS_IMAGES_DIR": str(root / "images"), "IAAS_INSTANCES_DIR": str(root / "instances"),
        "TMPDIR": str(root)}, root / "server.log", kind)
    return server, token
