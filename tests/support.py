"""Test helpers shared by every tier: an in-process client that checks the OpenAPI contract."""
from __future__ import annotations

import io
import json
import re
import threading
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from scripts.harness.servers import (  # noqa: F401 - re-exported: the tests' one import place
    SERVER_TOKENS,
    LiveServer,
    ProdServer,
    Reply,
    admin_token,
    decode_body,
    fetch,
    host_xml,
)
from src.api.openapi import DOCUMENT
from src.api.validation import validator
from src.app import App


def _operation(method: str, path: str) -> dict[str, Any] | None:
    for template, item in DOCUMENT["paths"].items():
        regex = "^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$"
        if re.match(regex, path):
            return item.get(method.lower())
    return None


def check_contract(method: str, path: str, reply: Reply) -> None:
    """Assert the reply's body matches the OpenAPI response schema for its status."""
    assert reply.headers.get("X-Request-Id"), "every response carries X-Request-Id"
    if reply.status < 400 and (path == "/" or path.startswith("/static/")):
        return  # the dashboard's page and files: not JSON, outside the API's contract
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
    problems = [e.message for e in validator(schema).iter_errors(reply.body)]
    assert not problems, f"{method} {path} -> {reply.status} breaks the contract: {problems}"


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
        while "Retry-After" in reply.headers:  # no wait slot was free: poll again
            time.sleep(float(reply.headers["Retry-After"]))
            reply = self.get(f"/v1/tasks/{task_id}?wait={seconds}")
        assert reply.status == 200, reply.body
        assert reply.body["status"] in ("succeeded", "failed"), reply.body
        return reply.body


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    """POST JSON to a live server's full URL and check the reply against the contract."""
    base = url[:url.index("/v1/")]
    reply = fetch(base, "POST", url[len(base):], body, headers)
    check_contract("POST", url[len(base):].partition("?")[0], reply)
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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(app: App) -> Samples:
    """Every sample of GET /metrics (as the admin), by (name, sorted labels)."""
    reply = Client(app).get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.body)
            for sample in family.samples}
