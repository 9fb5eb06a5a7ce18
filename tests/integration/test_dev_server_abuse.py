"""`make serve` (wsgiref) under abuse: trickling, short bodies and too many connections, on
127.0.0.1 with short deadlines so the tier stays fast."""
from __future__ import annotations

import io
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.support import LiveServer, ProdServer, admin_token, fetch

DEADLINE_S = 1.0
SLACK_S = 1.0
TRICKLERS = 10
HEAD = b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture
def live(make_app: AppFactory, config: Config) -> Iterator[LiveServer]:
    server = LiveServer(make_app(replace(config, request_timeout_s=DEADLINE_S)))
    yield server
    server.stop()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed its end (without blocking)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of the whole answer on sock; status 0: closed, no answer."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    if not answer:
        return 0, {}, None
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def wait_for(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_trickling_clients_are_cut_at_the_deadline(live: LiveServer) -> None:
    before = threading.active_count()
    started = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", live.port), timeout=5)
             for _ in range(TRICKLERS)]
    cut_after: dict[int, float] = {}
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert wait_for(lambda: threading.active_count() >= before + TRICKLERS, 1.0)
        while len(cut_after) < TRICKLERS and time.monotonic() - started < DEADLINE_S + 3:
            for index, sock in enumerate(socks):
                if index in cut_after:
                    continue
                try:  # a header line every 0.1 s: each read is quick, the request never ends
                    sock.sendall(b"X-Trickle: 1\r\n")
                    cut = closed_by_server(sock)
                except OSError:
                    cut = True
                if cut:
                    cut_after[index] = time.monotonic() - started
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
    print(f"{TRICKLERS} trickling clients cut after {min(cut_after.values()):.2f}-"
          f"{max(cut_after.values()):.2f} s (deadline {DEADLINE_S} s)")
    assert len(cut_after) == TRICKLERS
    assert max(cut_after.values()) < DEADLINE_S + SLACK_S
    assert wait_for(lambda: threading.active_count() <= before, 2.0), threading.enumerate()


def short_body(port: int, token: str, close: bool) -> tuple[int, Any, float]:
    """Content-Length 100 with 10 bytes sent; then close the sending side, or stall."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(HEAD + f"Authorization: Bearer {token}\r\n".encode()
                     + b"Content-Length: 100\r\n\r\n" + b'{"name": "')
        if close:
            sock.shutdown(socket.SHUT_WR)
        status, _, body = read_answer(sock)
    return status, body, time.monotonic() - started


@pytest.mark.parametrize("close", [True, False], ids=["client-closes", "client-stalls"])
def test_a_short_body_is_400_incomplete_body(live: LiveServer, close: bool) -> None:
    status, body, seconds = short_body(live.port, live.token, close)
    print(f"short body, {'closed' if close else 'stalled'}: {status} after {seconds:.2f} s")
    assert status == 400 and body["error"]["code"] == "incomplete_body"
    assert seconds < (0.5 if close else DEADLINE_S + SLACK_S)


def test_a_short_body_on_waitress_is_never_a_500(app: App) -> None:
    server = ProdServer(app)
    try:
        status, body, seconds = short_body(server.port, server.token, close=True)
    finally:
        server.stop()
    print(f"short body on waitress: {status or 'closed, no answer'} after {seconds:.2f} s")
    assert status in (0, 400), body  # 0: waitress dropped the half request


def test_connections_beyond_the_cap_get_503_server_busy(make_app: AppFactory,
                                                        config: Config) -> None:
    cap, extra = 4, 4
    server = LiveServer(make_app(replace(config, max_connections=cap, request_timeout_s=2.5)))
    stalled = []
    try:
        started = time.monotonic()
        for _ in range(cap + extra):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            stalled.append(sock)
        refused = [read_answer(sock) for sock in stalled[cap:]]
        refused_after = time.monotonic() - started  # the first waited 1 s, the others not
        assert all(not closed_by_server(sock) for sock in stalled[:cap])
        assert wait_for(lambda: all(closed_by_server(sock) for sock in stalled[:cap]), 5.0)
        after = fetch(server.url, "GET", "/healthz")
    finally:
        for sock in stalled:
            sock.close()
        server.stop()
    print(f"{extra} connections beyond {cap} refused within {refused_after:.2f} s")
    assert refused_after < 2.0
    for status, headers, body in refused:
        assert status == 503 and body["error"]["code"] == "server_busy"
        assert headers["Retry-After"] == "1" and headers["X-Request-Id"].startswith("req-")
    assert after.status == 200


class TimingOut(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("timed out")


@pytest.mark.parametrize("stream", [io.BytesIO(b'{"name": "'), TimingOut()],
                         ids=["ends-early", "times-out"])
def test_a_body_that_never_arrives_whole_is_400_in_process(app: App, stream: Any) -> None:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/vms", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": "100", "wsgi.input": stream,
               "HTTP_AUTHORIZATION": f"Bearer {admin_token(app)}"}
    captured = {}
    body = b"".join(app(environ, lambda status, headers: captured.update(status=status)))
    assert captured["status"].startswith("400")
    assert json.loads(body)["error"]["code"] == "incomplete_body"
