"""Tokens over the API: admins make any, members only member tokens of their own project; the
secret is shown once and never stored; members list and revoke their own tokens only."""
from __future__ import annotations

import io
from typing import Any

from src.app import App
from src.config import Config
from tests.support import Client


def _make(client: Client, **body: Any) -> Any:
    return client.post("/v1/tokens", {"project": "alpha", "role": "member", **body})


def test_an_admin_makes_a_token_shown_once_and_stored_hashed(app: App, config: Config) -> None:
    admin = Client(app)
    reply = _make(admin, project="team-x", expires_in_days=2, description="ci")
    assert reply.status == 201, reply.body
    made = reply.body
    assert set(made) >= {"id", "token", "project", "role", "expires_at"}
    assert (made["project"], made["role"]) == ("team-x", "member")
    assert made["expires_at"] > made["created_at"]
    member = Client(app, token=made["token"])
    assert member.get("/v1/vms").status == 200
    assert member.get("/v1/projects/team-x/quota").body["limits"]["instances"] == 10
    listed = admin.get("/v1/tokens").body["tokens"]
    assert made["token"] not in str(listed) and all("token" not in row for row in listed)
    assert [row["current"] for row in listed if row["id"] == made["id"]] == [False]
    assert made["token"].encode() not in config.db_path.read_bytes()
    audit = admin.get("/v1/events?method=POST").body["events"][0]
    assert (audit["path"], audit["status"], audit["resource_id"], audit["project"]) == (
        "/v1/tokens", 201, made["id"], "team-x")
    assert made["token"] not in str(admin.get("/v1/events").body)


def test_a_member_makes_member_tokens_of_its_own_project_only(app: App) -> None:
    member = Client(app, token=app.tokens.issue("alpha", "member")[1])
    made = _make(member)
    assert made.status == 201 and made.body["project"] == "alpha", made.body
    for body in ({"role": "admin"}, {"project": "beta"}, {"project": "beta", "role": "admin"}):
        refused = _make(member, **body)
        assert (refused.status, refused.error_code) == (403, "forbidden"), body
        assert "own project" in refused.body["error"]["message"]
    assert len(Client(app).get("/v1/tokens").body["tokens"]) == 3  # tests' admin, member, made
    child = Client(app, token=made.body["token"])
    assert _make(child, role="admin").status == 403  # a made token reaches no further either


def test_members_list_and_revoke_their_own_tokens_only(app: App) -> None:
    mine_row, mine = app.tokens.issue("alpha", "member")
    neighbour_row, _ = app.tokens.issue("alpha", "member")  # same project, another member
    admin_row, _ = app.tokens.issue("default", "admin")
    member = Client(app, token=mine)
    made = _make(member).body
    listed = {row["id"]: row for row in member.get("/v1/tokens").body["tokens"]}
    assert set(listed) == {mine_row.id, made["id"]}
    assert listed[mine_row.id]["current"] and not listed[made["id"]]["current"]
    assert listed[made["id"]]["created_by"] == mine_row.id
    for other in (neighbour_row.id, admin_row.id, "no-such-token"):
        reply = member.delete(f"/v1/tokens/{other}")
        assert (reply.status, reply.error_code) == (404, "token_not_found"), other
    assert member.delete(f"/v1/tokens/{made['id']}").status == 204
    assert Client(app, token=made["token"]).get("/v1/vms").status == 401
    revoked = [row for row in member.get("/v1/tokens").body["tokens"] if row["id"] == made["id"]]
    assert revoked[0]["revoked_at"] is not None
    assert member.delete(f"/v1/tokens/{made['id']}").status == 204  # again: nothing changes
    assert Client(app).delete(f"/v1/tokens/{neighbour_row.id}").status == 204  # admins: any
    assert member.delete(f"/v1/tokens/{mine_row.id}").status == 204  # signing itself out
    assert member.get("/v1/tokens").status == 401


def test_token_creation_refuses_an_idempotency_key_so_no_secret_is_kept(app: App,
                                                                        config: Config) -> None:
    admin = Client(app)
    before = len(admin.get("/v1/tokens").body["tokens"])
    assert _post_with_headers(app, admin.token or "", {})[0] == 201
    keyed = _post_with_headers(app, admin.token or "", {"HTTP_IDEMPOTENCY_KEY": "k-1"})
    assert keyed[0] == 400 and b"bad_request" in keyed[1] and b"secret" in keyed[1]
    assert len(admin.get("/v1/tokens").body["tokens"]) == before + 1
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0


def _post_with_headers(app: App, token: str, extra: dict[str, str]) -> tuple[int, bytes]:
    data = b'{"project":"alpha","role":"member"}'
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/tokens", "QUERY_STRING": "",
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(data)),
               "wsgi.input": io.BytesIO(data), "HTTP_AUTHORIZATION": f"Bearer {token}", **extra}
    status: list[int] = []
    body = b"".join(app(environ, lambda line, _headers: status.append(int(line.split()[0]))))
    return status[0], body


def test_bad_token_requests_are_refused_and_make_nothing(app: App) -> None:
    admin = Client(app)
    before = len(admin.get("/v1/tokens").body["tokens"])
    for body in ({"project": "Bad Name!"}, {"role": "root"}, {"expires_in_days": 0},
                 {"expires_in_days": "2"}, {"secret": "mine"}):
        reply = _make(admin, **body)
        assert (reply.status, reply.error_code) == (400, "validation_failed"), body
    assert len(admin.get("/v1/tokens").body["tokens"]) == before
