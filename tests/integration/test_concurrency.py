"""Concurrent requests over the real threaded server: unique names hold, SQLite never locks."""

from src.app import App
from tests.support import LiveServer, check_contract, race


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
