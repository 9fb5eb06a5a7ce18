"""The HTTP boundary: one error envelope, 404/405/413/415, request ids, the OpenAPI document."""
import io
import json
import socket
from dataclasses import replace
from pathlib import Path

from src.api.openapi import DOCUMENT
from src.app import App
from src.config import Config
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client, LiveServer, admin_token


def test_unknown_path_is_404_with_envelope(client: Client) -> None:
    reply = client.get("/v1/nothing-here")
    assert reply.status == 404
    assert set(reply.body) == {"error"}
    assert set(reply.body["error"]) == {"code", "message", "details"}
    assert reply.error_code == "not_found"


def test_wrong_method_is_405_with_allow(client: Client) -> None:
    reply = client.request("PUT", "/v1/vms")
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, POST"
    assert client.request("PATCH", "/v1/vms/some-vm").headers["Allow"] == "DELETE, GET"


def test_every_response_has_a_unique_request_id(client: Client) -> None:
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_non_json_content_type_is_415(client: Client) -> None:
    reply = client.request("POST", "/v1/vms", raw=b"name=vm", content_type="text/plain")
    assert reply.status == 415
    assert reply.error_code == "unsupported_media_type"


def test_malformed_json_is_400(client: Client) -> None:
    for raw in (b"{", b"", b"\xff\xfe", b'{"name": }'):
        reply = client.request("POST", "/v1/vms", raw=raw)
        assert reply.status == 400 and reply.error_code == "malformed_json", raw


class ExplodingInput(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body must not be read")


def test_oversized_body_is_413_without_reading_it(app: App) -> None:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/vms", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(64 * 1024 + 1), "wsgi.input": ExplodingInput(),
               "HTTP_AUTHORIZATION": f"Bearer {admin_token(app)}"}
    captured = {}
    body = b"".join(app(environ, lambda status, headers: captured.update(status=status)))
    assert captured["status"].startswith("413")
    assert json.loads(body)["error"]["code"] == "body_too_large"


def test_oversized_body_over_a_real_socket(app: App) -> None:
    server = LiveServer(app)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Authorization: Bearer {server.token}\r\n".encode()
                         + b"Content-Length: 10000000\r\n\r\n" + b"{" * 1000)
            answer = sock.recv(65536).decode()
        assert answer.startswith(("HTTP/1.0 413", "HTTP/1.1 413"))
    finally:
        server.stop()


def test_openapi_document_lists_every_route(client: Client, app: App) -> None:
    reply = client.get("/v1/openapi.json")
    assert reply.status == 200
    assert reply.body["openapi"] == "3.1.0"
    routes = {(route.method.lower(), route.pattern) for route in app.router.routes
              if not route.web}  # the dashboard's page and files are left out on purpose
    assert {route.pattern for route in app.router.routes if route.web} == {"/", "/static/{asset}"}
    documented = {(method, path) for path, item in DOCUMENT["paths"].items()
                  for method in item if method != "parameters"}
    assert routes == documented


def test_unexpected_error_is_a_generic_500(make_app: AppFactory, config: Config) -> None:
    def broken_qemu_img(argv: object) -> str:
        raise RuntimeError("secret internal detail /etc/shadow")

    client = Client(make_app(config, run=broken_qemu_img))
    (config.images_dir / "disk.qcow2").write_bytes(b"x")
    reply = client.post("/v1/images", {"name": "img", "file": "disk.qcow2", "format": "qcow2"})
    assert reply.status == 500
    assert reply.body == {"error": {"code": "internal_error", "message": "Internal server error.",
                                    "details": {}}}


def test_libvirt_down_is_503_and_changes_nothing(make_app: AppFactory, config: Config,
                                                 tmp_path: Path) -> None:
    client = Client(make_app(replace(config, libvirt_uri=f"test://{tmp_path}/gone.xml")))
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201
    reply = client.post("/v1/vms", {"name": "vm", "cpu": 1, "ram": 256, "image_name": "base"})
    assert reply.status == 503 and reply.error_code == "hypervisor_unavailable"
    with client.app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM vms").fetchone()[0] == 0
