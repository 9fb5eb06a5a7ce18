"""Concurrent requests over the real threaded server: unique names hold, SQLite never locks."""
import json
import threading
import urllib.error
import urllib.request
from typing import Any

from src.app import App
from tests.support import SERVER_TOKENS, LiveServer, Reply, check_contract


def post(url: str, body: dict[str, Any]) -> Reply:
    base = url[:url.index("/v1/")]
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {SERVER_TOKENS[base]}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return Reply(answer.status, dict(answer.headers), json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), json.loads(error.read()))


def race(url: str, bodies: list[dict[str, Any]]) -> list[Reply]:
    replies: list[Reply] = []
    start = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> None:
        start.wait()
        replies.append(post(url, body))

    threads = [threading.Thread(target=one, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return replies


def test_twenty_creates_of_one_name_give_one_vm(app: App, base_image: dict) -> None:
    server = LiveServer(app)
    try:
        body = {"name": "contested", "cpu": 1, "ram": 256, "image_name": "base"}
        replies = race(f"{server.url}/v1/vms", [body] * 20)
    finally:
        server.stop()
    for reply in replies:
        check_contract("POST", "/v1/vms", reply)
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [202] + [409] * 19, [r.body for r in replies if r.status not in (202, 409)]
    assert {reply.error_code for reply in replies if reply.status == 409} == {"name_conflict"}
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM vms").fetchone()[0] == 1


def test_many_different_creates_at_once(app: App, base_image: dict) -> None:
    server = LiveServer(app)
    try:
        bodies = [{"name": f"par-{index}", "cpu": 1, "ram": 256, "image_name": "base"}
                  for index in range(30)]
        replies = race(f"{server.url}/v1/vms", bodies)
    finally:
        server.stop()
    assert [reply.status for reply in replies] == [202] * 30, [r.body for r in replies]
    for reply in replies:
        assert app.runner.wait(reply.body["task"]["id"], 60).status == "succeeded"
