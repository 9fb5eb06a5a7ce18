"""waitress (`make serve-prod`) reads a body before the app sees its request, so an upload's may
pass 1 MiB only once the app admitted it from its headers: an anonymous, wrong or over-quota
upload is answered with the app's error before its body is read, and one project sends at most
IAAS_MAX_UPLOADS_PER_PROJECT bodies at once, one per image."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scripts.harness.uploads import put_file
from src.app import App
from src.config import Config
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client, ProdServer

MIB = 1024 * 1024
BIG = 300 * MIB


@pytest.fixture
def app(make_app: AppFactory, config: Config) -> App:
    return make_app(replace(config, image_max_bytes=64 * MIB, max_uploads_per_project=2))


@pytest.fixture
def prod(app: App) -> Iterator[ProdServer]:
    server = ProdServer(app)
    yield server
    server.stop()


@pytest.fixture
def alpha(app: App) -> Client:
    return Client(app, token=app.tokens.issue("alpha", "member")[1])


def pending(client: Client, name: str) -> str:
    reply = client.post("/v1/images", {"name": name, "format": "qcow2"})
    assert reply.status == 201, reply.body
    image_id: str = reply.body["id"]
    return image_id


def head(image: str, token: str | None, length: int | None = BIG, extra: str = "") -> bytes:
    """An upload's request line and headers (by Content-Length, or chunked when None)."""
    return (f"PUT /v1/images/{image}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/octet-stream\r\n"
            + (f"Authorization: Bearer {token}\r\n" if token else "")
            + ("Transfer-Encoding: chunked\r\n" if length is None else
               f"Content-Length: {length}\r\n") + extra + "\r\n").encode()


def answer_of(sock: socket.socket, timeout_s: float = 5) -> tuple[int, dict[str, str], Any]:
    """The status, headers (lower-case names) and JSON body the server answered; fails if
    none comes in time."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # the server closed with our unread body: the answer came
        pass
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a server that stopped reading and closed (it has answered)."""
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_an_anonymous_upload_is_answered_before_its_body(prod: ProdServer, alpha: Client) -> None:
    image = pending(alpha, "up")
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(head(image, None))  # 300 MiB announced, not a byte of it sent
        status, headers, body = answer_of(sock)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert headers["www-authenticate"] == "Bearer" and headers["x-request-id"]
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("case, status, code", [
    ("bad token", 401, "unauthorized"),
    ("no such image", 404, "image_not_found"),
    ("another project's image", 404, "image_not_found"),
    ("an active image", 409, "image_not_pending"),
    ("a public image", 403, "forbidden"),
    ("over IAAS_IMAGE_MAX_BYTES", 413, "body_too_large"),
    ("over images_gb", 403, "quota_exceeded"),
])
def test_a_wrong_upload_gets_the_apps_answer_before_its_body(
        prod: ProdServer, app: App, alpha: Client, config: Config, case: str, status: int,
        code: str) -> None:
    admin = Client(app)
    image, token, length = pending(alpha, "up"), alpha.token, 8 * MIB
    if case == "bad token":
        token = "iaas_not-a-token"
    elif case == "no such image":
        image = "nope"
    elif case == "another project's image":
        token = app.tokens.issue("beta", "member")[1]
    elif case == "an active image":
        make_qcow2(config.images_dir / "reg.qcow2")
        image = admin.post("/v1/images", {"name": "reg", "file": "reg.qcow2",
                                          "format": "qcow2"}).body["id"]
        token = admin.token
    elif case == "a public image":
        image = pending(admin, "public-up")
    elif case == "over IAAS_IMAGE_MAX_BYTES":
        length = 64 * MIB + 1
    else:
        assert admin.request("PUT", "/v1/projects/alpha/quota", {"images_gb": 1}).status == 200
        busy = pending(alpha, "busy")
        with app.db.write() as conn:  # another upload of unknown length has filled most of it
            conn.execute("UPDATE images SET bytes_done = ? WHERE id = ?", (1020 * MIB, busy))
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(head(image, token, length))
        answered = answer_of(sock)
    assert (answered[0], answered[2]["error"]["code"]) == (status, code), answered
    assert all(shown["status"] in ("pending", "active") for shown in
               admin.get("/v1/images").body["images"])  # nothing changed


def test_an_anonymous_chunked_body_is_cut_at_1_mib(prod: ProdServer, alpha: Client) -> None:
    image = pending(alpha, "up")
    piece = b"%x\r\n" % MIB + bytes(MIB) + b"\r\n"
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(head(image, None, None))
        sender = threading.Thread(target=send_quietly, args=(sock, piece * 4))  # no last chunk
        sender.start()
        status, _, body = answer_of(sock)
        sender.join(10)
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_a_refused_upload_is_not_told_to_continue(prod: ProdServer, alpha: Client) -> None:
    image = pending(alpha, "up")
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(head(image, None, extra="Expect: 100-continue\r\n"))
        sock.settimeout(5)
        assert sock.recv(64).startswith(b"HTTP/1.1 401 ")


def test_a_small_refused_upload_still_reaches_the_app(prod: ProdServer, alpha: Client) -> None:
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(head("nope", alpha.token, 10) + b"0123456789")
        status, _, body = answer_of(sock)
    assert status == 404 and body["error"]["code"] == "image_not_found"


def test_an_admitted_chunked_body_stops_where_images_gb_does(prod: ProdServer, app: App,
                                                             alpha: Client) -> None:
    assert Client(app).request("PUT", "/v1/projects/alpha/quota", {"images_gb": 1}).status == 200
    busy = pending(alpha, "busy")
    with app.db.write() as conn:  # another upload of unknown length has nearly filled it
        conn.execute("UPDATE images SET bytes_done = ? WHERE id = ?", (1022 * MIB, busy))
    image = pending(alpha, "up")
    piece = b"%x\r\n" % MIB + bytes(MIB) + b"\r\n"
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(head(image, alpha.token, None))
        sender = threading.Thread(target=send_quietly, args=(sock, piece * 8))
        sender.start()
        status, _, body = answer_of(sock)
        sender.join(10)
    assert status == 403 and body["error"]["code"] == "quota_exceeded", body
    assert alpha.get(f"/v1/images/{image}").body["status"] == "pending"


def admitted(prod: ProdServer) -> int:
    """The uploads the server's app holds admitted (their slots taken)."""
    return prod.app.intake.desk.count()


def test_one_project_sends_a_bounded_number_of_uploads_one_per_image(
        prod: ProdServer, alpha: Client, tmp_path: Path) -> None:
    first, second, third = (pending(alpha, name) for name in ("a", "b", "c"))
    held = []
    for image in (first, second):  # two bodies under way: the project's limit
        sock = socket.create_connection(("127.0.0.1", prod.port))
        sock.sendall(head(image, alpha.token, 8 * MIB) + bytes(MIB))
        held.append(sock)
    deadline = time.monotonic() + 5
    while admitted(prod) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for image, status, code in ((third, 429, "too_many_uploads"),
                                (first, 409, "upload_in_progress")):
        with socket.create_connection(("127.0.0.1", prod.port)) as sock:
            sock.sendall(head(image, alpha.token, 8 * MIB))
            answered = answer_of(sock)
        assert (answered[0], answered[2]["error"]["code"]) == (status, code), answered
        if status == 429:
            assert answered[1]["retry-after"]
    held.pop().close()  # a client that leaves mid-body gives its slot back
    while admitted(prod) > 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    reply = put_file(prod.url, alpha.token or "", third, make_qcow2(tmp_path / "src.qcow2"))
    assert reply.status == 200 and reply.body["status"] == "active", reply.body
    held.pop().close()
    deadline = time.monotonic() + 5
    while admitted(prod) > 0:  # a finished upload's slot is back too
        assert time.monotonic() < deadline
        time.sleep(0.02)


def counted_gate(prod: ProdServer) -> list[str]:
    """The images the gate is asked about from now on (it stays the app's own check)."""
    parser = prod.server.channel_class.parser_class
    asked: list[str] = []
    check = parser.gate

    def counting(authorization: str | None, method: str, path: str, length: int | None) -> Any:
        asked.append(path)
        return check(authorization, method, path, length)

    parser.gate = staticmethod(counting)
    return asked


def test_pipelined_refused_uploads_cost_one_look_up_per_read(prod: ProdServer) -> None:
    """The gate runs in waitress's one I/O thread: a flood of refused upload headers must not
    make it look up a token for each (that stalled every other client for seconds)."""
    asked = counted_gate(prod)
    flood = head("x", "iaas_not-a-token").replace(b"Connection: close\r\n", b"") * 500
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(flood)
        status, _, body = answer_of(sock)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert len(asked) <= 2, len(asked)  # one per read of the flood, not 500
    small = head("x", "iaas_not-a-token", 0).replace(b"Connection: close\r\n", b"") * 50
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(small + head("x", None, 0))  # bodies within 1 MiB are the app's to judge
        sock.settimeout(10)
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.count(b"HTTP/1.1 401 ") == 51
    assert len(asked) <= 2, len(asked)


def test_a_bodyless_continue_leaves_no_slot_and_no_raised_limit(prod: ProdServer,
                                                                alpha: Client) -> None:
    """waitress answers `100 Continue` to a request without a body and then reads what follows
    as more of its headers: that must neither hold a slot nor carry an upload's limit over."""
    first, second = pending(alpha, "x"), pending(alpha, "y")
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(f"PUT /v1/images/{first}/file HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {alpha.token}\r\nExpect: 100-continue\r\n\r\n"
                     .encode())
        sock.sendall(f"PUT /v1/images/{second}/file HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        sock.settimeout(5)
        assert b"100 Continue" not in sock.recv(65536)
    assert admitted(prod) == 0
    with socket.create_connection(("127.0.0.1", prod.port)) as sock:
        sock.sendall(f"PUT /v1/images/{first}/file HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {alpha.token}\r\nExpect: 100-continue\r\n\r\n"
                     f"POST /v1/keypairs HTTP/1.1\r\nHost: x\r\nContent-Length: {20 * MIB}\r\n"
                     f"Authorization: Bearer {alpha.token}\r\n"
                     "Content-Type: application/json\r\n\r\n".encode())
        answers = b""
        sock.settimeout(5)
        while b"413 " not in answers:  # refused from its length, before any of the 20 MiB
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk

