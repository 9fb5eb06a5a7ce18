"""An upload is admitted once, from its headers, on both servers: its token, image, size and
quota checked in one place; the announced size reserved against images_gb until it lands;
at most IAAS_MAX_UPLOADS_PER_PROJECT of one project and IAAS_UPLOAD_SHARE of the threads in
all, and each body held to IAAS_UPLOAD_MIN_RATE."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scripts.harness.uploads import put_file
from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.integration.test_upload_gate import answer_of, head, pending
from tests.support import Client, LiveServer, ProdServer, fetch

MIB = 1024 * 1024
THREADS = 8  # wsgiref's IAAS_MAX_CONNECTIONS, waitress's IAAS_PROD_THREADS: a share of 2
WINDOW_S = 2.0


def serve(app: App, kind: str) -> LiveServer | ProdServer:
    return LiveServer(app) if kind == "wsgiref" else ProdServer(app, threads=THREADS)


@pytest.fixture(params=["wsgiref", "waitress"])
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def app(make_app: AppFactory, config: Config) -> App:
    return make_app(replace(config, max_connections=THREADS, request_timeout_s=WINDOW_S,
                            upload_min_rate=64 * 1024))


@pytest.fixture
def live(app: App, kind: str) -> Iterator[LiveServer | ProdServer]:
    server = serve(app, kind)
    yield server
    server.stop()


@pytest.fixture
def alpha(app: App) -> Client:
    return Client(app, token=app.tokens.issue("alpha", "member")[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def counted(target: Any, name: str) -> list[Any]:
    """The calls made from now on to target.name (a method of one of the app's services)."""
    calls: list[Any] = []
    method = getattr(target, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return method(*args, **kwargs)

    setattr(target, name, counting)
    return calls


def test_an_upload_is_admitted_once(app: App, live: LiveServer | ProdServer, alpha: Client,
                                    tmp_path: Path) -> None:
    """Its token, its image, its size and its quota are each checked once, whichever server:
    waitress admits it from the headers (the body is over 1 MiB) and the app takes that
    admission as it is; wsgiref's app admits it before it reads the body."""
    source = tmp_path / "zeros.raw"
    source.write_bytes(bytes(2 * MIB))
    image = alpha.post("/v1/images", {"name": "raw", "format": "raw"}).body["id"]
    tokens = counted(app.tokens, "authenticate")
    lookups = counted(app.intake.images, "get")
    admissions = counted(app.intake, "admit")
    reply = put_file(live.url, alpha.token or "", image, source)
    assert reply.status == 200 and reply.body["status"] == "active", reply.body
    assert (len(tokens), len(lookups), len(admissions)) == (1, 1, 1)
    assert app.intake.desk.count() == 0


def test_announced_sizes_are_reserved_at_admission(app: App, live: LiveServer | ProdServer,
                                                  alpha: Client) -> None:
    """The review's L4: two 900 MB uploads against a 1 GiB images_gb both got `100 Continue`
    behind waitress. The first now holds its 900 MB until it ends; the second is 403."""
    assert Client(app).request("PUT", "/v1/projects/alpha/quota",
                               {"images_gb": 1}).status == 200
    first, second = pending(alpha, "first"), pending(alpha, "second")
    expect = "Expect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as held:
        held.sendall(head(first, alpha.token, 900_000_000, expect))
        assert held.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(head(second, alpha.token, 900_000_000, expect))
            status, _, body = answer_of(sock)
        assert (status, body["error"]["code"]) == (403, "quota_exceeded"), body
        assert body["error"]["details"]["in_use"] == 1  # the first's 900 MB, in GiB
    wait_until(lambda: app.intake.desk.count() == 0)  # the first's client left: released
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(head(second, alpha.token, 900_000_000, expect))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_one_project_sends_a_bounded_number_of_uploads_on_both_servers(
        make_app: AppFactory, config: Config, kind: str) -> None:
    app = make_app(replace(config, max_uploads_per_project=2, upload_share=0.5))
    server = serve(app, kind)
    alpha = Client(app, token=app.tokens.issue("alpha", "member")[1])
    held = []
    try:
        images = [pending(alpha, name) for name in ("a", "b", "c")]
        for image in images[:2]:  # two bodies under way: the project's limit
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(head(image, alpha.token, 8 * MIB, "Expect: 100-continue\r\n"))
            assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
            held.append(sock)
        for image, status, code in ((images[2], 429, "too_many_uploads"),
                                    (images[0], 409, "upload_in_progress")):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(head(image, alpha.token, 8 * MIB))
                answered = answer_of(sock)
            assert (answered[0], answered[2]["error"]["code"]) == (status, code), answered
        beta = Client(app, token=app.tokens.issue("beta", "member")[1])
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head(pending(beta, "b1"), beta.token, 8 * MIB,
                              "Expect: 100-continue\r\n"))  # another project is not held up
            assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
    finally:
        for sock in held:
            sock.close()
        server.stop()


def drip(socks: list[socket.socket], data: bytes) -> None:
    for sock in socks:
        try:
            sock.sendall(data)
        except OSError:  # answered and closed: it is read below
            pass


def test_slow_uploads_take_their_share_of_threads_and_are_cut(
        app: App, live: LiveServer | ProdServer, alpha: Client) -> None:
    """The review's M2: 8 chunked uploads dripping `1\\r\\nA\\r\\n` held every one of
    `make serve`'s 8 threads (everyone got 503 server_busy while they dripped). Now 2 (a
    quarter of the threads) are admitted, the others refused at once with 503 uploads_busy;
    other callers are served meanwhile, and the admitted ones are cut with 408 once a window
    brought less than IAAS_UPLOAD_MIN_RATE."""
    images = [pending(alpha, f"slow-{index}") for index in range(THREADS)]
    socks = [socket.create_connection(("127.0.0.1", live.port), timeout=10)
             for _ in images]
    try:
        for sock, image in zip(socks[:2], images, strict=False):  # admitted one by one
            admitted = app.intake.desk.count() + 1
            sock.sendall(head(image, alpha.token, None) + b"1\r\nA\r\n")
            wait_until(lambda: app.intake.desk.count() == admitted)  # noqa: B023 - awaited here
        for sock, image in zip(socks[2:], images[2:], strict=True):
            sock.sendall(head(image, alpha.token, None) + b"1\r\nA\r\n")
        refused = [answer_of(sock) for sock in socks[2:]]
        assert app.intake.desk.count() == 2
        # The refused ones' connections are let go at once (their clients keep them open).
        wait_until(lambda: live.server.addresses.count("127.0.0.1") == 2)
        for status, headers, body in refused:
            assert (status, body["error"]["code"]) == (503, "uploads_busy"), body
            assert headers["retry-after"]
        beta = app.tokens.issue("beta", "member")[1]
        for path in ("/healthz", "/v1/images"):  # served while the two drip
            reply = fetch(live.url, "GET", path, headers={"Authorization": f"Bearer {beta}"})
            assert reply.status == 200, reply.body
        started = time.monotonic()
        drip(socks[:2], b"1\r\nA\r\n")
        cut = [answer_of(sock, timeout_s=WINDOW_S * 2 + 5) for sock in socks[:2]]
        print(f"two dripping uploads cut after {time.monotonic() - started:.2f} s "
              f"(window {WINDOW_S} s)")
    finally:
        for sock in socks:
            sock.close()
    for status, _, body in cut:
        assert (status, body["error"]["code"]) == (408, "upload_too_slow"), body
    wait_until(lambda: app.intake.desk.count() == 0)
    states = {alpha.get(f"/v1/images/{image}").body["status"] for image in images}
    assert states <= {"pending", "error"}
