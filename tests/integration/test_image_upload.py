"""Image uploads: a pending image takes its file by PUT, streamed and hashed, checked like a
registered file; a bad, short, oversized or mismatched upload leaves no file and no active
image; both servers stream it (chunked too)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scripts.harness.uploads import put_file, send_then_close, zeros
from src.app import App
from src.config import Config
from src.database import images as image_dao
from src.services.images.files import Landing
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client, LiveServer, ProdServer

REPO = Path(__file__).resolve().parent.parent.parent


def pending(client: Client, name: str = "up", **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/images", {"name": name, "format": "qcow2", **extra})
    assert reply.status == 201, reply.body
    assert reply.body["status"] == "pending" and reply.body["sha256"] is None
    body: dict[str, Any] = reply.body
    return body


def put(client: Client, image: str, data: bytes,
        content_type: str = "application/octet-stream") -> Any:
    return client.request("PUT", f"/v1/images/{image}/file", raw=data, content_type=content_type)


def leftovers(config: Config) -> list[str]:
    return sorted(path.name for path in config.images_dir.iterdir())


def test_upload_makes_an_active_image_that_boots(client: Client, config: Config,
                                                 tmp_path: Path) -> None:
    data = make_qcow2(tmp_path / "src.qcow2", "96M").read_bytes()
    image = pending(client, sha256=hashlib.sha256(data).hexdigest())
    early = client.post("/v1/vms", {"name": "early", "cpu": 1, "ram": 128, "image_name": "up"})
    assert early.status == 409 and early.error_code == "image_not_active"
    reply = put(client, image["id"], data)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "active" and reply.body["error"] is None
    assert reply.body["sha256"] == hashlib.sha256(data).hexdigest()
    assert reply.body["virtual_size_bytes"] == 96 * 1024 ** 2
    assert (config.images_dir / image["file"]).read_bytes() == data
    assert leftovers(config) == [image["file"]]  # no partial file stays
    vm = client.post("/v1/vms", {"name": "from-upload", "cpu": 1, "ram": 128, "image_name": "up"})
    assert vm.status == 202, vm.body
    assert client.wait_task(vm.body["task"]["id"])["status"] == "succeeded"
    again = put(client, image["id"], data)
    assert again.status == 409 and again.error_code == "image_not_pending"


def test_a_wrong_checksum_is_422_and_leaves_no_file(client: Client, config: Config,
                                                    tmp_path: Path) -> None:
    data = make_qcow2(tmp_path / "src.qcow2").read_bytes()
    image = pending(client, sha256="0" * 64)
    reply = put(client, image["id"], data)
    assert reply.status == 422 and reply.error_code == "checksum_mismatch", reply.body
    assert reply.body["error"]["details"]["actual"] == hashlib.sha256(data).hexdigest()
    shown = client.get(f"/v1/images/{image['id']}").body
    assert shown["status"] == "error" and shown["error"]["code"] == "checksum_mismatch"
    assert leftovers(config) == []


def test_not_an_image_is_refused_like_a_registration(client: Client, config: Config) -> None:
    image = pending(client)
    reply = put(client, image["id"], b"this is no qcow2 image" * 1000)
    assert reply.status == 400 and reply.error_code == "image_file_invalid", reply.body
    shown = client.get(f"/v1/images/{image['id']}").body
    assert shown["status"] == "error" and shown["error"]["code"] == "image_file_invalid"
    assert leftovers(config) == []


def test_a_failed_upload_may_be_sent_again(client: Client, config: Config, tmp_path: Path) -> None:
    image = pending(client)
    assert put(client, image["id"], b"garbage").status == 400
    data = make_qcow2(tmp_path / "src.qcow2").read_bytes()
    reply = put(client, image["id"], data)
    assert reply.status == 200 and reply.body["status"] == "active"


def test_only_octet_stream_and_only_upload_images(client: Client, config: Config) -> None:
    image = pending(client)
    reply = put(client, image["id"], b"{}", content_type="application/json")
    assert reply.status == 415 and "application/octet-stream" in reply.body["error"]["message"]
    make_qcow2(config.images_dir / "reg.qcow2")
    client.post("/v1/images", {"name": "reg", "file": "reg.qcow2", "format": "qcow2"})
    reply = put(client, "reg", b"x")
    assert reply.status == 409 and reply.error_code == "image_not_pending"
    assert put(client, "nope", b"x").status == 404


def test_oversized_uploads_are_413(make_app: AppFactory, config: Config) -> None:
    app = make_app(replace(config, image_max_bytes=1024 * 1024))
    client = Client(app)
    image = pending(client)
    reply = put(client, image["id"], bytes(1024 * 1024 + 1))
    assert reply.status == 413 and reply.error_code == "body_too_large"
    assert reply.body["error"]["details"]["limit"] == 1024 * 1024
    # Refused from Content-Length before a byte is read: the image still waits.
    assert client.get(f"/v1/images/{image['id']}").body["status"] == "pending"
    assert leftovers(config) == []


def test_the_json_body_limit_stays_for_every_other_route(client: Client) -> None:
    reply = client.request("POST", "/v1/images", raw=b" " * (64 * 1024 + 1))
    assert reply.status == 413 and reply.body["error"]["details"]["limit"] == 64 * 1024


def test_uploads_are_audited(client: Client, config: Config, tmp_path: Path) -> None:
    image = pending(client)
    put(client, image["id"], make_qcow2(tmp_path / "src.qcow2").read_bytes())
    events = client.get(f"/v1/events?resource_id={image['id']}").body["events"]
    assert [(event["method"], event["status"]) for event in events] == [("PUT", 200), ("POST", 201)]


def test_deleting_an_uploaded_image_removes_its_file(client: Client, config: Config,
                                                     tmp_path: Path) -> None:
    image = pending(client)
    put(client, image["id"], make_qcow2(tmp_path / "src.qcow2").read_bytes())
    assert (config.images_dir / image["file"]).is_file()
    assert client.delete(f"/v1/images/{image['id']}").status == 204
    assert leftovers(config) == []


@pytest.fixture(params=["wsgiref", "waitress"])
def live(request: pytest.FixtureRequest, app: App) -> Any:
    server = LiveServer(app) if request.param == "wsgiref" else ProdServer(app)
    yield server
    server.stop()


def test_both_servers_stream_uploads_by_length_and_chunked(live: Any, client: Client,
                                                           config: Config, tmp_path: Path) -> None:
    source = make_qcow2(tmp_path / "src.qcow2", "32M")
    by_length = pending(client, "by-length")
    reply = put_file(live.url, live.token, by_length["id"], source)
    assert reply.status == 200 and reply.body["status"] == "active", reply.body
    chunked = pending(client, "chunked")
    data = source.read_bytes()
    pieces = (data[start:start + 7000] for start in range(0, len(data), 7000))
    reply = put_file(live.url, live.token, chunked["id"], pieces)
    assert reply.status == 200 and reply.body["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_truncated_upload_leaves_no_file_and_no_active_image(live: Any, client: Client,
                                                               config: Config) -> None:
    image = pending(client)
    answer = send_then_close(live.url, live.token, image["id"], 10 * 1024 * 1024,
                             bytes(1024 * 1024))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closed connection
        shown = client.get(f"/v1/images/{image['id']}").body
        if shown["status"] != "pending" or isinstance(live, ProdServer):
            break
        time.sleep(0.05)
    assert shown["status"] in ("pending", "error") and shown["sha256"] is None
    if isinstance(live, LiveServer):  # wsgiref streams it: the app sees it end early
        assert b"incomplete_body" in answer
        assert shown["error"]["code"] == "upload_incomplete"
    assert leftovers(config) == []


def test_wsgiref_holds_an_upload_to_its_minimum_rate_not_the_request_deadline(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app = make_app(replace(config, request_timeout_s=1.0, upload_min_rate=1024))
    server = LiveServer(app)
    try:
        client = Client(app)
        image = pending(client)
        data = make_qcow2(tmp_path / "src.qcow2").read_bytes()

        def slowly() -> Any:  # 3 s in all, well over 1 KiB in every second
            for start in range(0, len(data), len(data) // 6 + 1):
                time.sleep(0.5)
                yield data[start:start + len(data) // 6 + 1]

        reply = put_file(server.url, server.token, image["id"], slowly(), length=len(data))
        assert reply.status == 200 and reply.body["status"] == "active", reply.body
        stalled = pending(client, "stalled")
        answer = send_then_close_after(server.url, server.token, stalled["id"], 2.5)
        assert answer.startswith(b"HTTP/1.0 408 ") and b"upload_too_slow" in answer
        shown = client.get(f"/v1/images/{stalled['id']}").body
        assert shown["status"] == "error" and shown["error"]["code"] == "upload_too_slow"
    finally:
        server.stop()


def send_then_close_after(base_url: str, token: str, image: str, idle_s: float) -> bytes:
    """Send half a body (1,000 bytes), then nothing for idle_s, then close."""
    import socket

    host, _, port = base_url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"PUT /v1/images/{image}/file HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {token}\r\n"
                      "Content-Type: application/octet-stream\r\nContent-Length: 2000\r\n\r\n"
                      ).encode() + b"x" * 1000)
        sock.settimeout(idle_s + 5)  # the server gives up after its idle timeout, not ours
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_oversized_chunked_uploads_stop_at_the_limit(make_app: AppFactory, config: Config) -> None:
    app = make_app(replace(config, image_max_bytes=2 * 1024 * 1024))
    server = LiveServer(app)
    try:
        client = Client(app)
        image = pending(client)
        reply = put_file(server.url, server.token, image["id"], zeros(3 * 1024 * 1024))
        assert reply.status == 413 and reply.error_code == "body_too_large"
        shown = client.get(f"/v1/images/{image['id']}").body
        assert shown["status"] == "error" and shown["error"]["code"] == "image_too_large"
        assert leftovers(config) == []
    finally:
        server.stop()


def test_wsgiref_answers_100_continue_once_the_upload_is_accepted(app: App, client: Client,
                                                                   tmp_path: Path) -> None:
    import socket

    data = make_qcow2(tmp_path / "src.qcow2").read_bytes()
    image = pending(client)
    server = LiveServer(app)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall((f"PUT /v1/images/{image['id']}/file HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {server.token}\r\nExpect: 100-continue\r\n"
                          "Content-Type: application/octet-stream\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n").encode())
            assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"  # as curl -T waits for
            sock.sendall(data)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200 ") and b'"status":"active"' in answer
    finally:
        server.stop()


def test_a_members_refused_upload_reveals_no_host_path(app: App, config: Config) -> None:
    member = Client(app, token=app.tokens.issue("alpha", "member")[1])
    image = pending(member)
    reply = put(member, image["id"], b"no image here" * 100)
    assert reply.status == 400 and reply.error_code == "image_file_invalid"
    shown = member.get(f"/v1/images/{image['id']}").body
    for text in (str(reply.body), str(shown)):
        assert str(config.images_dir) not in text and ".iaas-partial" not in text


def test_a_landing_that_cannot_flush_still_removes_its_file(app: App, client: Client,
                                                            config: Config) -> None:
    """A full disk makes closing the partial file fail too: the file must go all the same."""
    image_id = pending(client)["id"]
    with app.db.read() as conn:
        row = image_dao.by_id(conn, image_id)
    assert row is not None
    landing = Landing(app.intake, row, "pending", None)
    assert leftovers(config)
    landing._file.close()
    landing._file = open("/dev/full", "wb")  # noqa: SIM115 - discard closes it
    landing._file.write(b"x" * 1024)  # buffered: the flush on close fails with ENOSPC
    with pytest.raises(OSError):
        landing.discard()
    assert not leftovers(config)
