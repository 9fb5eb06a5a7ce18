"""Long-polls are bounded: per token and to half of the server's threads, on both servers."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.database import tasks as task_dao
from src.services.tasks.runner import new_task_row
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client, LiveServer, ProdServer, Reply, fetch

WAITS = 32
WAIT_S = 2
PROD_THREADS = 8
ANSWER_DEADLINE_S = 1.0


def stuck_task(app: App, client: Client) -> str:
    """A task that stays queued: nothing will ever run it."""
    created = client.post("/v1/vms", {"name": "poll-me", "cpu": 1, "ram": 128,
                                      "image_name": "base"}).body
    client.wait_task(created["task"]["id"])
    task = new_task_row(created["id"], "stop", None)
    with app.db.write() as conn:
        task_dao.insert(conn, task)
    return task.id


def timed(url: str, path: str, token: str) -> tuple[Reply, float]:
    started = time.monotonic()
    reply = fetch(url, "GET", path, headers={"Authorization": f"Bearer {token}"})
    return reply, time.monotonic() - started


def wait_many(app: App, server: Any, task_id: str) -> tuple[list[Reply], dict[str, float]]:
    """WAITS concurrent long-polls from one token; meanwhile /healthz and another project's
    list are timed."""
    others = {}
    path = f"/v1/tasks/{task_id}?wait={WAIT_S}"
    with ThreadPoolExecutor(WAITS) as pool:
        polls = [pool.submit(timed, server.url, path, server.token) for _ in range(WAITS)]
        time.sleep(0.5)  # every poll has arrived; the granted ones are waiting
        other_token = app.tokens.issue("bystander", "member")[1]
        health, others["healthz"] = timed(server.url, "/healthz", other_token)
        listing, others["listVms"] = timed(server.url, "/v1/vms", other_token)
        assert (health.status, listing.status) == (200, 200)
        replies = [poll.result()[0] for poll in polls]
    return replies, others


@pytest.mark.parametrize("kind", ["wsgiref", "waitress"])
@pytest.mark.parametrize("per_token, max_connections", [(4, 64), (32, 16)])
def test_waits_beyond_the_bounds_answer_at_once(make_app: AppFactory, config: Config, kind: str,
                                                per_token: int, max_connections: int) -> None:
    app = make_app(replace(config, max_waits_per_token=per_token,
                           max_connections=max_connections))
    client = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    task_id = stuck_task(app, client)
    server = LiveServer(app) if kind == "wsgiref" else ProdServer(app, threads=PROD_THREADS)
    try:
        replies, others = wait_many(app, server, task_id)
    finally:
        server.stop()
    threads = max_connections if kind == "wsgiref" else PROD_THREADS
    allowed = min(per_token, threads // 2)
    told_to_retry = [reply for reply in replies if reply.headers.get("Retry-After") == "1"]
    print(f"{kind}, {per_token} per token, {threads} threads: {len(told_to_retry)} of {WAITS} "
          f"answered at once; healthz {others['healthz'] * 1000:.0f} ms, "
          f"listVms {others['listVms'] * 1000:.0f} ms")
    assert all(reply.status == 200 and reply.body["status"] == "queued" for reply in replies)
    assert len(told_to_retry) == WAITS - allowed
    assert max(others.values()) < ANSWER_DEADLINE_S


def test_a_finished_task_answers_without_retry_after(client: Client, base_image: dict) -> None:
    created = client.post("/v1/vms", {"name": "done", "cpu": 1, "ram": 128,
                                      "image_name": "base"}).body
    client.wait_task(created["task"]["id"])
    replies = [client.get(f"/v1/tasks/{created['task']['id']}?wait=5") for _ in range(10)]
    assert all(reply.status == 200 and "Retry-After" not in reply.headers for reply in replies)


def test_retry_after_is_in_the_contract(client: Client) -> None:
    document = client.get("/v1/openapi.json").body
    headers = document["paths"]["/v1/tasks/{task}"]["get"]["responses"]["200"]["headers"]
    assert headers["Retry-After"]["schema"] == {"type": "integer"}
