"""A 3 GiB upload streams through either server with flat memory, and a malformed chunk size
is refused at its line: the server runs in a child process and its peak resident size (VmHWM)
is read before and after."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.harness.uploads import ChildServer, child_on_test_driver, put_file

MIB = 1024 ** 2
GIB = 1024 ** 3
SIZE = 3 * GIB
GROWTH_BOUND_KIB = 128 * 1024  # 128 MiB: a twenty-fourth of the file


@pytest.fixture(params=["wsgiref", "waitress"])
def child(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ChildServer, str]]:
    server, token = child_on_test_driver(tmp_path, request.param, "iaas-test")
    yield server, token
    server.stop()


def test_a_3_gib_sparse_upload_keeps_memory_flat(child: tuple[ChildServer, str],
                                                 tmp_path: Path) -> None:
    server, token = child
    sparse = tmp_path / "sparse.raw"
    with sparse.open("wb") as out:
        out.truncate(SIZE)  # a raw disk of zeros that takes no room here
    image = server.call(token, "POST", "/v1/images", {"name": "big", "format": "raw"}).body
    before = server.memory_kib()
    reply = put_file(server.url, token, image["id"], sparse, timeout_s=600)
    after = server.memory_kib()
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "active" and reply.body["virtual_size_bytes"] == SIZE
    growth = after["VmHWM"] - before["VmHWM"]
    print(f"server VmRSS {before['VmRSS']} -> {after['VmRSS']} KiB, peak VmHWM "
          f"{before['VmHWM']} -> {after['VmHWM']} KiB (+{growth} KiB) for {SIZE // 1024} KiB")
    assert growth < GROWTH_BOUND_KIB, f"the server's peak grew by {growth} KiB"
    assert (tmp_path / "images" / image["file"]).stat().st_size == SIZE


@pytest.fixture
def wsgiref_child(tmp_path: Path) -> Iterator[tuple[ChildServer, str]]:
    server, token = child_on_test_driver(tmp_path, "wsgiref", "iaas-test")
    yield server, token
    server.stop()


def test_a_negative_chunk_size_is_400_at_its_line_and_memory_stays_flat(
        wsgiref_child: tuple[ChildServer, str]) -> None:
    """The review's H2 repro: `-1` as a chunk size made `make serve` read the rest of the
    connection into memory (RSS 73 -> 271 MB for 96 MiB sent), then answer 500."""
    server, token = wsgiref_child
    image = server.call(token, "POST", "/v1/images", {"name": "h2", "format": "raw"}).body
    before = server.memory_kib()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"PUT /v1/images/{image['id']}/file HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n-1\r\n".encode())
        try:
            for _ in range(96):
                sock.sendall(bytes(MIB))
        except OSError:  # the server answered and closed before the last of it
            pass
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    after = server.memory_kib()
    growth = after["VmHWM"] - before["VmHWM"]
    print(f"H2: server VmRSS {before['VmRSS']} -> {after['VmRSS']} KiB, peak VmHWM "
          f"{before['VmHWM']} -> {after['VmHWM']} KiB (+{growth} KiB) for 96 MiB sent")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 "), answer[:300]
    assert json.loads(body)["error"] == {"code": "bad_request", "details": {
        "reason": "The chunked request body is malformed."},
        "message": "The chunked request body is malformed."}
    assert growth < 16 * 1024, f"the server's peak grew by {growth} KiB"
    shown = server.call(token, "GET", f"/v1/images/{image['id']}").body
    assert shown["status"] == "error" and shown["error"]["code"] == "bad_request"
