"""Quotas (atomic with the create), Idempotency-Key (never a second VM) and the audit trail."""
from __future__ import annotations

import logging
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.utils.clock import utc_after
from tests.support import Client, LiveServer, Reply, post, race

VM = {"cpu": 1, "ram": 128, "image_name": "base"}


@pytest.fixture
def member(app: App, base_image: dict) -> Client:
    return Client(app, token=app.tokens.issue("team-a", "member")[1])


def send(url: str, token: str, body: dict[str, Any], key: str | None = None) -> Reply:
    return post(url + "/v1/vms", body, _headers(token, key))


def _headers(token: str, key: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def race_as(app: App, token: str, bodies: list[dict[str, Any]],
            key: str | None = None) -> list[Reply]:
    server = LiveServer(app)
    try:
        return race(server.url + "/v1/vms", bodies, _headers(token, key))
    finally:
        server.stop()


def test_new_projects_get_the_default_quota_and_default_is_unlimited(app: App,
                                                                      member: Client) -> None:
    shown = member.get("/v1/projects/team-a/quota").body
    assert shown == {"project": "team-a",
                     "in_use": {"instances": 0, "vcpus": 0, "ram": 0, "gpus": 0, "disk_gb": 0,
                                "images_gb": 0, "images": 0, "keypairs": 0, "tokens": 0,
                                "volumes": 0, "volumes_gb": 0, "security_groups": 0},
                     "limits": {"instances": 10, "vcpus": 20, "ram": 51200, "gpus": 0,
                                "disk_gb": 500, "images_gb": 100, "images": 50,
                                "keypairs": 100, "tokens": 50, "volumes": 10,
                                "volumes_gb": 1000, "security_groups": 10}}
    admin = Client(app)
    assert admin.get("/v1/projects/default/quota").body["limits"] == {
        "instances": None, "vcpus": None, "ram": None, "gpus": None, "disk_gb": None,
        "images_gb": None, "images": None, "keypairs": None, "tokens": None,
        "volumes": None, "volumes_gb": None, "security_groups": None}
    assert member.get("/v1/projects/default/quota").error_code == "project_not_found"
    assert admin.get("/v1/projects/nope/quota").error_code == "project_not_found"
    assert [p["project"] for p in admin.get("/v1/projects").body["projects"]] == [
        "default", "team-a"]


def test_ten_racing_creates_against_a_quota_of_three_give_three(app: App, member: Client) -> None:
    admin = Client(app)
    reply = admin.request("PUT", "/v1/projects/team-a/quota", {"instances": 3})
    assert reply.status == 200 and reply.body["limits"]["instances"] == 3
    replies = race_as(app, member.token or "", [{"name": f"q-{i}", **VM} for i in range(10)])
    assert sorted(r.status for r in replies) == [202] * 3 + [403] * 7
    for refused in (r for r in replies if r.status == 403):
        assert refused.body["error"]["code"] == "quota_exceeded"
        assert refused.body["error"]["details"] == {"resource": "instances", "limit": 3,
                                                    "in_use": 3, "requested": 1}
    assert len(member.get("/v1/vms").body["vms"]) == 3
    assert member.get("/v1/projects/team-a/quota").body["in_use"] == {
        "instances": 3, "vcpus": 3, "ram": 384, "gpus": 0, "disk_gb": 3, "images_gb": 0,
        "images": 0, "keypairs": 0, "tokens": 0, "volumes": 0, "volumes_gb": 0,
        "security_groups": 1}  # the default group its first VM made


def test_every_resource_has_its_quota(app: App, member: Client) -> None:
    admin = Client(app)
    admin.request("PUT", "/v1/projects/team-a/quota", {"vcpus": 2, "ram": 1024})
    refused = member.post("/v1/vms", {"name": "wide", **VM, "cpu": 3})
    assert refused.status == 403
    assert refused.body["error"]["details"] == {"resource": "vcpus", "limit": 2, "in_use": 0,
                                                "requested": 3}
    refused = member.post("/v1/vms", {"name": "fat", **VM, "ram": 2048})
    assert refused.body["error"]["details"]["resource"] == "ram"
    admin.post("/v1/flavors", {"name": "g1", "cpu": 1, "ram": 128, "disk_gb": 1, "gpu_count": 1})
    refused = member.post("/v1/vms", {"name": "gpu", "image_name": "base", "flavor": "g1"})
    assert refused.body["error"]["details"] == {"resource": "gpus", "limit": 0, "in_use": 0,
                                                "requested": 1}
    assert member.get("/v1/vms").body["vms"] == []
    assert member.request("PUT", "/v1/projects/team-a/quota", {"vcpus": 99}).status == 403
    for bad in ({}, {"vcpus": -1}, {"vcpus": "9"}, {"cores": 1}):
        assert admin.request("PUT", "/v1/projects/team-a/quota", bad).status == 400, bad
    lifted = admin.request("PUT", "/v1/projects/team-a/quota", {"vcpus": None})
    assert lifted.body["limits"]["vcpus"] is None
    assert member.post("/v1/vms", {"name": "wide", **VM, "cpu": 3}).status == 202


def test_a_retried_create_with_its_key_makes_one_vm(app: App, member: Client) -> None:
    server = LiveServer(app)
    try:
        first = send(server.url, member.token or "", {"name": "once", **VM}, key="k-1")
        again = send(server.url, member.token or "", {"name": "once", **VM}, key="k-1")
        other_body = send(server.url, member.token or "", {"name": "twice", **VM}, key="k-1")
    finally:
        server.stop()
    assert first.status == 202 and again.status == 202
    assert again.body == first.body and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other_body.status == 422 and other_body.error_code == "idempotency_key_reused"
    assert [vm["name"] for vm in member.get("/v1/vms").body["vms"]] == ["once"]


def test_ten_racing_retries_with_one_key_make_one_vm(app: App, member: Client) -> None:
    replies = race_as(app, member.token or "", [{"name": "raced", **VM}] * 10, key="same-key")
    assert [r.status for r in replies] == [202] * 10, [r.body for r in replies]
    assert len({r.body["id"] for r in replies}) == 1
    assert len(member.get("/v1/vms").body["vms"]) == 1


def test_keys_belong_to_a_token_and_expire_after_a_day(app: App, member: Client) -> None:
    server = LiveServer(app)
    other = app.tokens.issue("team-b", "member")[1]
    try:
        mine = send(server.url, member.token or "", {"name": "a1", **VM}, key="shared")
        theirs = send(server.url, other, {"name": "b1", **VM}, key="shared")
        assert theirs.status == 202 and theirs.body["id"] != mine.body["id"]
        with app.db.write() as conn:
            conn.execute("UPDATE idempotency_keys SET created_at = ?", (utc_after(-25 * 3600),))
        later = send(server.url, member.token or "", {"name": "a2", **VM}, key="shared")
        assert later.status == 202 and later.body["name"] == "a2"
        bad = send(server.url, member.token or "", {"name": "a3", **VM}, key="x" * 256)
        assert bad.status == 400
    finally:
        server.stop()


def test_refusals_are_not_kept_so_a_retry_can_succeed(app: App, member: Client) -> None:
    admin = Client(app)
    admin.request("PUT", "/v1/projects/team-a/quota", {"instances": 0})
    server = LiveServer(app)
    try:
        refused = send(server.url, member.token or "", {"name": "later", **VM}, key="retry")
        assert refused.status == 403 and refused.error_code == "quota_exceeded"
        admin.request("PUT", "/v1/projects/team-a/quota", {"instances": 1})
        accepted = send(server.url, member.token or "", {"name": "later", **VM}, key="retry")
        assert accepted.status == 202 and "Idempotent-Replayed" not in accepted.headers
    finally:
        server.stop()


def test_a_replay_never_answers_another_token(app: App, member: Client) -> None:
    vm = member.post("/v1/vms", {"name": "private", **VM}).body
    member.wait_task(vm["task"]["id"])
    admin_token = app.tokens.issue("default", "admin")[1]
    colleague = app.tokens.issue("default", "member")[1]
    server = LiveServer(app)
    try:
        stop = f"{server.url}/v1/vms/{vm['id']}/stop"
        first = post(stop, {}, _headers(admin_token, "k1"))
        assert first.status == 202
        again = post(stop, {}, _headers(colleague, "k1"))
        assert again.status == 404 and "Idempotent-Replayed" not in again.headers
    finally:
        server.stop()


def test_every_mutating_request_is_audited(app: App, member: Client, config: Config,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = Client(app)
    vm = member.post("/v1/vms", {"name": "audited", **VM}).body
    member.wait_task(vm["task"]["id"])
    member.post(f"/v1/vms/{vm['id']}/stop", None)
    admin.post("/v1/flavors", {"name": "f1", "cpu": 1, "ram": 128, "disk_gb": 1})
    member.post("/v1/flavors", {"name": "f2", "cpu": 1, "ram": 128, "disk_gb": 1})  # 403
    Client(app, token=None).post("/v1/vms", {"name": "anon", **VM})  # 401: counted, not kept
    member.get("/v1/vms")  # reads are not audited

    events = admin.get("/v1/events").body["events"]
    seen = [(e["method"], e["path"], e["status"], e["project"]) for e in events]
    assert seen[:4] == [
        ("POST", "/v1/flavors", 403, "team-a"),
        ("POST", "/v1/flavors", 201, None),  # an admin's flavor is no project's
        ("POST", f"/v1/vms/{vm['id']}/stop", 202, "team-a"),
        ("POST", "/v1/vms", 202, "team-a")]
    created = events[3]
    assert created["resource_id"] == vm["id"] and created["request_id"].startswith("req-")
    assert created["token_id"] and all(e["token_id"] for e in events)
    own = member.get("/v1/events").body["events"]
    assert {e["project"] for e in own} == {"team-a"} and len(own) == 3
    assert member.get("/v1/events?project=default").body["events"] == []
    filtered = admin.get(f"/v1/events?resource_id={vm['id']}&method=POST").body["events"]
    assert [e["path"] for e in filtered] == [f"/v1/vms/{vm['id']}/stop", "/v1/vms"]
    page = admin.get("/v1/events?limit=2").body
    rest = admin.get(f"/v1/events?limit=2&marker={page['next_marker']}").body["events"]
    assert [e["id"] for e in page["events"] + rest] == [e["id"] for e in events[:4]]
    assert 'iaas_unauthorized_requests_total{route="/v1/vms"} 1.0' in admin.get("/metrics").body
    dump = b"".join(path.read_bytes() for path in config.db_path.parent.glob("iaas.db*"))
    assert (member.token or "").encode() not in dump
    assert member.token and member.token not in caplog.text  # nor in the request log
    assert '"method": "POST", "path": "/v1/vms", "route": "/v1/vms", "status": 202' in caplog.text


def test_admin_actions_are_filed_under_the_project_they_touch(app: App, member: Client) -> None:
    admin = Client(app)
    vm = member.post("/v1/vms", {"name": "owned", **VM}).body
    member.wait_task(vm["task"]["id"])
    assert admin.post(f"/v1/vms/{vm['id']}/stop", None).status == 202
    assert admin.request("PUT", "/v1/projects/team-a/quota", {"gpus": 1}).status == 200
    default_member = Client(app, token=app.tokens.issue("default", "member")[1])
    own = [(e["method"], e["path"]) for e in member.get("/v1/events").body["events"]]
    assert ("POST", f"/v1/vms/{vm['id']}/stop") in own
    assert ("PUT", "/v1/projects/team-a/quota") in own
    theirs = [e["path"] for e in default_member.get("/v1/events").body["events"]]
    assert theirs == []  # nothing of team-a, nor the admin's public image (no project's)


def test_anonymous_junk_grows_neither_the_trail_nor_the_metrics(app: App) -> None:
    anonymous = Client(app, token=None)
    for index in range(20):
        anonymous.request(f"X{index}", "/v1/" + "a" * 2000)
        anonymous.request("POST", f"/v1/nowhere-{index}")
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 0
    text = Client(app).get("/metrics").body
    assert 'method="other"' in text and 'method="X1"' not in text
    for _ in range(50):  # a real route: counted in /metrics, never a row (no anonymous writes)
        anonymous.post("/v1/vms", {"name": "anon", **VM})
        anonymous.delete("/v1/vms/anon")
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 0
    assert ('iaas_unauthorized_requests_total{route="/v1/vms/{vm}"} 50.0'
            in Client(app).get("/metrics").body)
