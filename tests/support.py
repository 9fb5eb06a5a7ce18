"""Test helpers shared by every tier: an in-process client that checks the OpenAPI contract."""
from __future__ import annotations

import io
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import make_server

from src.api.openapi import DOCUMENT
from src.api.validation import _format_checker, _StrictValidator
from src.app import App
from src.serve import QuietHandler, ThreadingWSGIServer
from src.serve_prod import bound_port, make_prod_server

_HOST_XML = """<node>
  <cpu>
    <mode>paravirt</mode><model>x86_64</model><active>{cpus}</active><nodes>{numa_nodes}</nodes>
    <sockets>1</sockets><cores>{cpus}</cores><threads>1</threads><mhz>3000</mhz>
  </cpu>
  <memory>{memory_kib}</memory>
  <network>
    <name>{network}</name>
    <bridge name='virbr-iaas-t'/>
    <ip address='10.250.0.1' netmask='255.255.255.0'/>
  </network>
{devices}
</node>
"""


def host_xml(network: str, *, cpus: int = 16, memory_gib: int = 64, numa_nodes: int = 1,
                  devices: str = "") -> str:
    """A libvirt test-driver host: CPUs, memory, one network and optional node devices."""
    return _HOST_XML.format(network=network, cpus=cpus, memory_kib=memory_gib * 1024 * 1024,
                            numa_nodes=numa_nodes, devices=devices)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any = field(default=None)

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error["code"] if isinstance(error, dict) else None


def _operation(method: str, path: str) -> dict[str, Any] | None:
    for template, item in DOCUMENT["paths"].items():
        regex = "^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$"
        if re.match(regex, path):
            return item.get(method.lower())
    return None


def check_contract(method: str, path: str, reply: Reply) -> None:
    """Assert the reply's body matches the OpenAPI response schema for its status."""
    assert reply.headers.get("X-Request-Id"), "every response carries X-Request-Id"
    operation = _operation(method, path)
    if operation is None or str(reply.status) not in operation["responses"]:
        schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        assert reply.status >= 400, f"{method} {path} -> {reply.status} is not documented"
    else:
        content = operation["responses"][str(reply.status)].get("content")
        if content is None:
            assert reply.body is None, f"{method} {path} -> {reply.status} should have no body"
            return
        if "text/plain" in content:
            assert reply.headers["Content-Type"].startswith("text/plain")
            assert isinstance(reply.body, str)
            return
        schema = content["application/json"]["schema"]
    validator = _StrictValidator({**schema, "components": DOCUMENT["components"]},
                                 format_checker=_format_checker)
    problems = [e.message for e in validator.iter_errors(reply.body)]
    assert not problems, f"{method} {path} -> {reply.status} breaks the contract: {problems}"


def decode_body(headers: dict[str, str], payload: bytes) -> Any:
    if headers.get("Content-Type", "").startswith("text/plain"):
        return payload.decode()
    return json.loads(payload) if payload else None


class Verbs:
    """get/post/delete on top of a subclass's request()."""

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        raise NotImplementedError

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, body)

    def delete(self, path: str) -> Reply:
        return self.request("DELETE", path)


# Bearer tokens of the live servers tests started, by base URL: clients look theirs up here.
SERVER_TOKENS: dict[str, str] = {}


def admin_token(app: App) -> str:
    """A fresh admin token of the default project, minted through the app's own service."""
    return app.tokens.issue("default", "admin", description="tests")[1]


class Client(Verbs):
    """Calls the WSGI app in-process, like a server would, and checks every reply's contract.

    It carries an admin token unless given another one (token=None sends none).
    """

    def __init__(self, app: App, token: str | None | bool = True) -> None:
        self.app = app
        self.token = admin_token(app) if token is True else (token or None)

    def request(self, method: str, path: str, body: Any = None, *,  # type: ignore[override]
                raw: bytes | None = None, content_type: str = "application/json") -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        target, _, query = path.partition("?")
        environ = {"REQUEST_METHOD": method, "PATH_INFO": target, "QUERY_STRING": query,
                   "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(data)),
                   "wsgi.input": io.BytesIO(data)}
        if self.token:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            captured["status"] = int(status.split()[0])
            captured["headers"] = dict(headers)

        payload = b"".join(self.app(environ, start_response))
        reply = Reply(captured["status"], captured["headers"], decode_body(captured["headers"], payload))
        check_contract(method, target, reply)
        return reply

    def wait_task(self, task_id: str, seconds: int = 60) -> dict[str, Any]:
        reply = self.get(f"/v1/tasks/{task_id}?wait={seconds}")
        assert reply.status == 200, reply.body
        assert reply.body["status"] in ("succeeded", "failed"), reply.body
        return reply.body


class _BackgroundServer:
    """A server on 127.0.0.1 serving from a daemon thread, with an admin token for its clients."""

    def _serve(self, app: App, port: int, serve: Callable[[], object]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token = SERVER_TOKENS[self.url] = admin_token(app)
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()


class LiveServer(_BackgroundServer):
    """The app behind the real threaded wsgiref server (what `make serve` runs)."""

    def __init__(self, app: App) -> None:
        self.server = make_server("127.0.0.1", 0, app, server_class=ThreadingWSGIServer,
                                  handler_class=QuietHandler)
        self._serve(app, self.server.server_port, self.server.serve_forever)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


class ProdServer(_BackgroundServer):
    """The app behind waitress (what `make serve-prod` runs)."""

    def __init__(self, app: App, threads: int = 8) -> None:
        self.server = make_prod_server(app, "127.0.0.1", 0, threads)
        self._serve(app, bound_port(self.server), self.server.run)

    def stop(self) -> None:
        self.server.close()
        self.server.task_dispatcher.shutdown()
        self._thread.join(timeout=10)


# No proxies: one set in the environment must never carry calls to 127.0.0.1 off the machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SOCKET_TIMEOUT_S = 90  # above the longest long-poll (60 s)


def fetch(base_url: str, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> Reply:
    """One HTTP call with the server's admin token (headers may override or add); error
    statuses are returned as replies, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json"}
    if base_url in SERVER_TOKENS:
        sent["Authorization"] = f"Bearer {SERVER_TOKENS[base_url]}"
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={**sent, **(headers or {})})
    try:
        with _OPENER.open(request, timeout=SOCKET_TIMEOUT_S) as response:
            status, answer_headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, payload = exc.code, dict(exc.headers), exc.read()
    return Reply(status, answer_headers, decode_body(answer_headers, payload))


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    """POST JSON to a live server's full URL and check the reply against the contract."""
    base = url[:url.index("/v1/")]
    reply = fetch(base, "POST", url[len(base):], body, headers)
    check_contract("POST", url[len(base):], reply)
    return reply


def race(url: str, bodies: list[dict[str, Any]],
         headers: dict[str, str] | None = None) -> list[Reply]:
    """POST every body at once (threads released by one barrier); replies in finishing order."""
    replies: list[Reply] = []
    start = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> None:
        start.wait()
        replies.append(post(url, body, headers))

    threads = [threading.Thread(target=one, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return replies
