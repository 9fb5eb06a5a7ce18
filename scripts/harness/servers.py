"""Live servers for tests and benchmarks: the app behind wsgiref or waitress on 127.0.0.1, a
test-driver host description, and one plain HTTP call that never goes through a proxy."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from src.app import App
from src.servers.dev import make_dev_server
from src.servers.prod import bound_port, make_prod_server

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


def decode_body(headers: dict[str, str], payload: bytes) -> Any:
    kind = headers.get("Content-Type", "")
    if kind.startswith(("text/", "image/svg")):  # console text, and the dashboard's files
        return payload.decode()
    return json.loads(payload) if payload else None


# Bearer tokens of the live servers tests started, by base URL: clients look theirs up here.
SERVER_TOKENS: dict[str, str] = {}


def admin_token(app: App) -> str:
    """A fresh admin token of the default project, minted through the app's own service."""
    return app.tokens.issue("default", "admin", description="tests")[1]


class _BackgroundServer:
    """A server on 127.0.0.1 serving from a daemon thread, with an admin token for its clients."""

    def _serve(self, app: App, port: int, serve: Callable[[], object]) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token = SERVER_TOKENS[self.url] = admin_token(app)
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()


class LiveServer(_BackgroundServer):
    """The app behind the real threaded wsgiref server (what `make serve` runs)."""

    def __init__(self, app: App) -> None:
        self.server = make_dev_server(app, "127.0.0.1", 0)
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
        # Closed from its own I/O thread: closed from here, a socket could vanish under the
        # select() that thread is in (EBADF).
        self.server.trigger.pull_trigger(self.server.close)  # type: ignore[attr-defined]
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
