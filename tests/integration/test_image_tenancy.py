"""Who owns images: admins' are public, members' private to their project (404 elsewhere), names
are per project, members delete only their own; the images_gb quota counts stored bytes."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.harness.uploads import put_file, zeros
from src.app import App
from src.config import Config
from tests.conftest import make_qcow2
from tests.support import Client, LiveServer

MIB = 1024 * 1024


@pytest.fixture
def alpha(app: App) -> Client:
    return Client(app, token=app.tokens.issue("alpha", "member")[1])


@pytest.fixture
def beta(app: App) -> Client:
    return Client(app, token=app.tokens.issue("beta", "member")[1])


def upload(client: Client, name: str, data: bytes, **extra: Any) -> dict[str, Any]:
    image = client.post("/v1/images", {"name": name, "format": "qcow2", **extra})
    assert image.status == 201, image.body
    reply = client.request("PUT", f"/v1/images/{image.body['id']}/file", raw=data,
                           content_type="application/octet-stream")
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


def names(client: Client) -> list[str]:
    return sorted(image["name"] for image in client.get("/v1/images").body["images"])


def test_private_images_stay_in_their_project(client: Client, alpha: Client, beta: Client,
                                              tmp_path: Path) -> None:
    data = make_qcow2(tmp_path / "src.qcow2").read_bytes()
    public = upload(client, "shared", data)
    mine = upload(alpha, "mine", data)
    assert (public["visibility"], public["project"]) == ("public", "_public")
    assert (mine["visibility"], mine["project"]) == ("private", "alpha")
    assert names(alpha) == ["mine", "shared"] and names(beta) == ["shared"]
    assert names(client) == ["mine", "shared"]  # admins see every project's
    for path in ("/v1/images/mine", f"/v1/images/{mine['id']}"):
        assert beta.get(path).error_code == "image_not_found"
    vm = {"name": "vm", "cpu": 1, "ram": 128, "image_name": mine["id"]}
    assert beta.post("/v1/vms", vm).error_code == "image_not_found"
    assert beta.delete(f"/v1/images/{mine['id']}").status == 404
    assert alpha.post("/v1/vms", vm).status == 202
    assert client.get(f"/v1/images/{mine['id']}").status == 200  # admins: by id
    assert beta.post("/v1/vms", {**vm, "image_name": "shared"}).status == 202


def test_names_are_per_project_and_the_own_one_wins(client: Client, alpha: Client, beta: Client,
                                                   tmp_path: Path) -> None:
    data = make_qcow2(tmp_path / "src.qcow2").read_bytes()
    public = upload(client, "ubuntu", data)
    own = upload(alpha, "ubuntu", data)  # no clash with the public one, nor another project's
    assert upload(beta, "ubuntu", data)["id"] != own["id"]
    assert alpha.get("/v1/images/ubuntu").body["id"] == own["id"]
    assert beta.get("/v1/images/ubuntu").body["project"] == "beta"
    assert client.get("/v1/images/ubuntu").body["id"] == public["id"]
    clash = alpha.post("/v1/images", {"name": "ubuntu", "format": "qcow2"})
    assert clash.status == 409 and clash.error_code == "name_conflict"
    assert client.post("/v1/images", {"name": "ubuntu", "format": "raw"}).status == 409


def test_who_may_make_and_delete_what(client: Client, alpha: Client, config: Config,
                                      tmp_path: Path) -> None:
    make_qcow2(config.images_dir / "base.qcow2")
    forbidden = alpha.post("/v1/images", {"name": "x", "format": "qcow2", "visibility": "public"})
    assert forbidden.status == 403 and forbidden.error_code == "forbidden"
    register = alpha.post("/v1/images", {"name": "x", "format": "qcow2", "file": "base.qcow2"})
    assert register.status == 403
    assert client.post("/v1/images", {"name": "admins-own", "format": "qcow2",
                                      "visibility": "private"}).body["visibility"] == "private"
    public = client.post("/v1/images", {"name": "base", "format": "qcow2", "file": "base.qcow2"})
    assert public.body["visibility"] == "public"
    assert alpha.delete("/v1/images/base").status == 403
    pending = alpha.post("/v1/images", {"name": "up", "format": "qcow2"}).body
    upload_to_public = alpha.request("PUT", f"/v1/images/{public.body['id']}/file", raw=b"x",
                                     content_type="application/octet-stream")
    assert upload_to_public.status == 403
    assert alpha.delete(f"/v1/images/{pending['id']}").status == 204
    assert (config.images_dir / "base.qcow2").is_file()


def test_images_gb_counts_stored_bytes(app: App, client: Client, alpha: Client) -> None:
    assert client.request("PUT", "/v1/projects/alpha/quota", {"images_gb": 1}).status == 200
    server = LiveServer(app)
    try:
        first = alpha.post("/v1/images", {"name": "first", "format": "raw"}).body
        reply = put_file(server.url, alpha.token or "", first["id"], zeros(700 * MIB),
                         length=700 * MIB)
        assert reply.status == 200, reply.body
        quota = alpha.get("/v1/projects/alpha/quota").body
        assert quota["in_use"]["images_gb"] == 1 and quota["limits"]["images_gb"] == 1
        second = alpha.post("/v1/images", {"name": "second", "format": "raw"}).body
        reply = put_file(server.url, alpha.token or "", second["id"], zeros(400 * MIB),
                         length=400 * MIB)
        assert reply.status == 403 and reply.error_code == "quota_exceeded", reply.body
        assert reply.body["error"]["details"] == {"resource": "images_gb", "limit": 1,
                                                  "in_use": 1, "requested": 1}
        chunked = put_file(server.url, alpha.token or "", second["id"], zeros(400 * MIB))
        assert chunked.status == 403 and chunked.error_code == "quota_exceeded"
        shown = alpha.get(f"/v1/images/{second['id']}").body
        assert shown["status"] == "error" and shown["error"]["code"] == "quota_exceeded"
        assert alpha.delete("/v1/images/first").status == 204
        assert alpha.get("/v1/projects/alpha/quota").body["in_use"]["images_gb"] == 0
    finally:
        server.stop()


class ChunkedStream:
    """A chunked request body made as it is read, counting the bytes the server took."""

    def __init__(self, total: int, piece: int = MIB) -> None:
        self._pieces: Iterator[bytes] = iter(
            [b"%x\r\n" % len(block) + block + b"\r\n" for block in zeros(total, piece)]
            + [b"0\r\n\r\n"])
        self._buffer = b""
        self.taken = 0

    def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted and (piece := next(self._pieces, b"")):
            self._buffer += piece

    def read(self, size: int) -> bytes:
        self._fill(size)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.taken += len(out)
        return out

    def readline(self, limit: int) -> bytes:
        self._fill(limit)
        end = self._buffer.find(b"\n", 0, limit)
        return self.read(limit if end < 0 else end + 1)


def put_chunked(app: App, token: str, image: str, body: ChunkedStream) -> tuple[int, Any]:
    """PUT the image's file as a chunked body, straight into the app (as wsgiref passes it)."""
    import json

    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": f"/v1/images/{image}/file",
               "QUERY_STRING": "", "CONTENT_TYPE": "application/octet-stream",
               "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": body,
               "HTTP_AUTHORIZATION": f"Bearer {token}"}
    status: list[int] = []
    payload = b"".join(app(environ, lambda line, _h: status.append(int(line.split()[0]))))
    return status[0], json.loads(payload)


def in_flight(app: App, image_id: str, done: int) -> None:
    """The image receives an upload of unknown length that has brought done bytes so far."""
    with app.db.write() as conn:
        conn.execute("UPDATE images SET bytes_done = ? WHERE id = ?", (done, image_id))


def test_a_chunked_upload_stops_at_images_gb_as_its_bytes_arrive(
        app: App, client: Client, alpha: Client, config: Config) -> None:
    assert client.request("PUT", "/v1/projects/alpha/quota", {"images_gb": 1}).status == 200
    busy = alpha.post("/v1/images", {"name": "busy", "format": "raw"}).body
    in_flight(app, busy["id"], 1024 * MIB - 3 * MIB)  # a chunked upload beside it, nearly full
    image = alpha.post("/v1/images", {"name": "up", "format": "raw"}).body
    body = ChunkedStream(16 * MIB)
    status, answer = put_chunked(app, alpha.token or "", image["id"], body)
    assert (status, answer["error"]["code"]) == (403, "quota_exceeded"), answer
    assert body.taken <= 4 * MIB + 64  # refused at the piece that goes over, not at the end
    shown = alpha.get(f"/v1/images/{image['id']}").body
    assert shown["status"] == "error" and shown["error"]["code"] == "quota_exceeded"
    assert [path.name for path in config.images_dir.iterdir()] == []


def test_a_chunked_upload_writes_nothing_past_a_full_quota(app: App, client: Client,
                                                          alpha: Client, config: Config) -> None:
    assert client.request("PUT", "/v1/projects/alpha/quota", {"images_gb": 0}).status == 200
    image = alpha.post("/v1/images", {"name": "up", "format": "raw"}).body
    body = ChunkedStream(64 * MIB)
    status, answer = put_chunked(app, alpha.token or "", image["id"], body)
    assert (status, answer["error"]["code"]) == (403, "quota_exceeded"), answer
    assert body.taken <= MIB + 16  # the first piece, never written
    assert [path.name for path in config.images_dir.iterdir()] == []


def test_in_flight_bytes_of_unknown_length_count_in_the_quota(app: App, client: Client,
                                                              alpha: Client) -> None:
    busy = alpha.post("/v1/images", {"name": "busy", "format": "raw"}).body
    in_flight(app, busy["id"], 1536 * MIB)
    assert alpha.get("/v1/projects/alpha/quota").body["in_use"]["images_gb"] == 2
