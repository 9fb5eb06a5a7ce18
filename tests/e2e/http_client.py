"""A urllib client for the live server on 127.0.0.1 that checks every reply against the contract."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from tests.support import SERVER_TOKENS, Reply, Verbs, check_contract, decode_body

# No proxies: one set in the environment must never carry calls to 127.0.0.1 off the machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SOCKET_TIMEOUT_S = 90  # above the longest long-poll (60 s)


def fetch(base_url: str, method: str, path: str, body: Any = None) -> Reply:
    """One HTTP call with the server's admin token; error statuses are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if base_url in SERVER_TOKENS:
        headers["Authorization"] = f"Bearer {SERVER_TOKENS[base_url]}"
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=SOCKET_TIMEOUT_S) as response:
            status, headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, payload = exc.code, dict(exc.headers), exc.read()
    return Reply(status, headers, decode_body(headers, payload))


class HttpClient(Verbs):
    """Same calls as tests.support.Client, but over a real socket."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        reply = fetch(self.base_url, method, path, body)
        check_contract(method, path.partition("?")[0], reply)
        return reply

    def wait_task(self, task_id: str, deadline_s: float = 180) -> dict[str, Any]:
        """Long-poll the task until it finishes; fail if it is still going at the deadline."""
        deadline = time.monotonic() + deadline_s
        while True:
            reply = self.get(f"/v1/tasks/{task_id}?wait=60")
            assert reply.status == 200, reply.body
            task: dict[str, Any] = reply.body
            if task["status"] in ("succeeded", "failed"):
                return task
            assert time.monotonic() < deadline, f"task {task_id} still {task['status']}"
