"""Count quotas (review L3): a project's images, keypairs and the live tokens its members made
are limited like its VMs, shown and set like every quota, checked in the insert's transaction."""
from __future__ import annotations

from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.origin import reaching_origin
from tests.support import Client, LiveServer, race

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp k"


@pytest.fixture
def member(app: App) -> Client:
    return Client(app, token=app.tokens.issue("team-a", "member")[1])


def limit(client: Client, **limits: int | None) -> None:
    reply = client.request("PUT", "/v1/projects/team-a/quota", limits)
    assert reply.status == 200, reply.body
    assert {key: reply.body["limits"][key] for key in limits} == limits


def refusal(reply: Any) -> dict[str, Any]:
    assert (reply.status, reply.error_code) == (403, "quota_exceeded"), reply.body
    details: dict[str, Any] = reply.body["error"]["details"]
    return details


def test_images_count_every_image_of_the_project(make_app: AppFactory, config: Config) -> None:
    app = make_app(reaching_origin(config))  # port 9 answers nobody: the import fails later
    admin, member = Client(app), Client(app, token=app.tokens.issue("team-a", "member")[1])
    limit(admin, images=2)
    first = member.post("/v1/images", {"name": "one", "format": "raw"})
    assert first.status == 201
    importing = member.post("/v1/images", {"name": "two", "format": "raw",
                                           "url": "http://127.0.0.1:9/two.raw"})
    assert importing.status == 201  # an import is an image too (it fails later: no server)
    for body in ({"name": "three", "format": "raw"},
                 {"name": "four", "format": "raw", "url": "http://127.0.0.1:9/four.raw"}):
        assert refusal(member.post("/v1/images", body)) == {
            "resource": "images", "limit": 2, "in_use": 2, "requested": 1}
    member.wait_task(importing.body["task_id"])  # failed, still an image until deleted
    assert member.get("/v1/projects/team-a/quota").body["in_use"]["images"] == 2
    assert member.delete("/v1/images/one").status == 204
    assert member.post("/v1/images", {"name": "three", "format": "raw"}).status == 201
    public = admin.post("/v1/images", {"name": "shared", "format": "raw"})
    assert public.status == 201  # public images are no project's: never counted
    limit(admin, images=None)
    assert member.post("/v1/images", {"name": "four", "format": "raw"}).status == 201


def test_keypairs_are_limited_and_a_race_gets_exactly_the_limit(app: App, client: Client,
                                                                member: Client) -> None:
    limit(client, keypairs=3)
    server = LiveServer(app)
    try:
        replies = race(server.url + "/v1/keypairs",
                       [{"name": f"k{index}", "public_key": KEY} for index in range(10)],
                       {"Authorization": f"Bearer {member.token}"})
    finally:
        server.stop()
    assert sorted(reply.status for reply in replies) == [201] * 3 + [403] * 7
    assert {reply.body["error"]["details"]["resource"] for reply in replies
            if reply.status == 403} == {"keypairs"}
    assert len(member.get("/v1/keypairs").body["keypairs"]) == 3
    assert member.get("/v1/projects/team-a/quota").body["in_use"]["keypairs"] == 3
    name = next(reply.body["name"] for reply in replies if reply.status == 201)
    assert member.delete(f"/v1/keypairs/{name}").status == 204
    assert member.post("/v1/keypairs", {"name": "again", "public_key": KEY}).status == 201


def test_tokens_count_the_live_ones_members_made(app: App, client: Client,
                                                 member: Client) -> None:
    limit(client, tokens=2)
    made = [member.post("/v1/tokens", {"project": "team-a", "role": "member"})
            for _ in range(2)]
    assert [reply.status for reply in made] == [201, 201]
    assert refusal(member.post("/v1/tokens", {"project": "team-a", "role": "member"})) == {
        "resource": "tokens", "limit": 2, "in_use": 2, "requested": 1}
    child = Client(app, token=made[0].body["token"])  # a made token mints against the same
    assert refusal(child.post("/v1/tokens", {"project": "team-a", "role": "member"}))
    for _ in range(3):  # an admin's tokens are not counted, nor limited
        assert client.post("/v1/tokens", {"project": "team-a", "role": "member"}).status == 201
    assert member.get("/v1/projects/team-a/quota").body["in_use"]["tokens"] == 2
    assert member.delete(f"/v1/tokens/{made[1].body['id']}").status == 204  # revoked: freed
    assert member.post("/v1/tokens", {"project": "team-a", "role": "member"}).status == 201
    with app.db.write() as conn:  # expired: freed too
        conn.execute("UPDATE tokens SET expires_at = '2000-01-01T00:00:00Z' WHERE id = ?",
                     (made[0].body["id"],))
    assert member.post("/v1/tokens", {"project": "team-a", "role": "member"}).status == 201


def test_count_limits_are_shown_and_set_like_the_others(client: Client,
                                                        member: Client) -> None:
    shown = member.get("/v1/projects/team-a/quota").body
    assert {key: shown["limits"][key] for key in ("images", "keypairs", "tokens")} == {
        "images": 50, "keypairs": 100, "tokens": 50}
    assert client.get("/v1/projects/default/quota").body["limits"]["images"] is None
    for bad in ({"images": -1}, {"keypairs": "3"}, {"tokens": 1.5}):
        assert client.request("PUT", "/v1/projects/team-a/quota", bad).status == 400, bad
    limit(client, images=0, keypairs=None, tokens=7)
    assert member.request("PUT", "/v1/projects/team-a/quota", {"images": 9}).status == 403
