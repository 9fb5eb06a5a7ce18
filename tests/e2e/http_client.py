"""A urllib client for the live server on 127.0.0.1 that checks every reply against the contract."""
from __future__ import annotations

import time
from typing import Any

from tests.support import Reply, Verbs, check_contract, fetch


class HttpClient(Verbs):
    """Same calls as tests.support.Client, but over a real socket."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else None  # else the admin

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        reply = fetch(self.base_url, method, path, body, self._headers)
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
            time.sleep(float(reply.headers.get("Retry-After", 0)))  # the server declined to wait
