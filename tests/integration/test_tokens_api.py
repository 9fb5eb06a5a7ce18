"""Tokens over the API: admins make any, members only member tokens of their own project; the
secret is shown once and never stored; members list and revoke their own tokens only."""
from __future__ import annotations

import io
from typing import Any

import pytest

from src import errors
from src.app import App
from src.config import Config
from src.database.db import Database
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


def test_a_member_made_token_never_outlives_its_maker(app: App) -> None:
    maker_row, maker = app.tokens.issue("alpha", "member", expires_in_s=3600)
    member = Client(app, token=maker)
    forever = _make(member, description="no expiry asked").body
    longer = _make(member, expires_in_days=30).body
    shorter = _make(member, expires_in_days=0.01).body
    assert forever["expires_at"] == longer["expires_at"] == maker_row.expires_at
    assert shorter["expires_at"] < maker_row.expires_at
    grandchild = _make(Client(app, token=forever["token"])).body  # at any depth
    assert grandchild["expires_at"] == maker_row.expires_at
    never = app.tokens.issue("alpha", "member")[1]  # a maker that never expires
    assert _make(Client(app, token=never)).body["expires_at"] is None
    # An admin's tokens stand on their own: an expiring admin token makes a lasting one.
    admin = Client(app, token=app.tokens.issue("default", "admin", expires_in_s=60)[1])
    assert _make(admin).body["expires_at"] is None


def test_revoking_a_member_token_revokes_every_token_made_from_it(app: App) -> None:
    maker_row, maker = app.tokens.issue("alpha", "member", description="contractor")
    child = _make(Client(app, token=maker)).body
    grandchild = _make(Client(app, token=child["token"])).body
    sibling_row, sibling = app.tokens.issue("alpha", "member")  # not made from the maker
    admin = Client(app)
    assert admin.delete(f"/v1/tokens/{maker_row.id}").status == 204
    for token in (maker, child["token"], grandchild["token"]):
        assert Client(app, token=token).get("/v1/vms").status == 401
    assert Client(app, token=sibling).get("/v1/vms").status == 200
    listed = {row["id"]: row for row in admin.get("/v1/tokens").body["tokens"]}
    assert listed[child["id"]]["revoked_at"] == listed[maker_row.id]["revoked_at"] is not None
    assert listed[grandchild["id"]]["revoked_at"] is not None
    assert listed[sibling_row.id]["revoked_at"] is None


def test_an_admin_tokens_makings_stand_on_their_own(app: App) -> None:
    old_row, old = app.tokens.issue("default", "admin", description="rotated away")
    admin = Client(app, token=old)
    member = _make(admin).body
    other_admin = _make(admin, project="default", role="admin").body
    made_by_member = _make(Client(app, token=member["token"])).body
    assert Client(app).delete(f"/v1/tokens/{old_row.id}").status == 204
    assert admin.get("/v1/vms").status == 401
    for token in (member["token"], other_admin["token"], made_by_member["token"]):
        assert Client(app, token=token).get("/v1/vms").status == 200
    # The member token it made is a maker of its own: revoking it takes its makings along.
    assert Client(app).delete(f"/v1/tokens/{member['id']}").status == 204
    assert Client(app, token=made_by_member["token"]).get("/v1/vms").status == 401


def test_a_member_lists_and_revokes_the_tokens_made_from_it_at_any_depth(app: App) -> None:
    top_row, top = app.tokens.issue("alpha", "member")
    member = Client(app, token=top)
    child = _make(member).body
    grandchild = _make(Client(app, token=child["token"])).body
    listed = {row["id"] for row in member.get("/v1/tokens").body["tokens"]}
    assert listed == {top_row.id, child["id"], grandchild["id"]}
    assert {row["id"] for row in Client(app, token=child["token"]).get(
        "/v1/tokens").body["tokens"]} == {child["id"], grandchild["id"]}  # not its maker
    assert Client(app, token=child["token"]).delete(f"/v1/tokens/{top_row.id}").status == 404
    assert member.delete(f"/v1/tokens/{grandchild['id']}").status == 204
    assert Client(app, token=grandchild["token"]).get("/v1/vms").status == 401
    assert Client(app, token=child["token"]).get("/v1/vms").status == 200


def test_a_maker_revoked_while_its_request_runs_makes_nothing(app: App) -> None:
    row, secret = app.tokens.issue("alpha", "member")
    caller = app.tokens.authenticate(f"Bearer {secret}")
    app.tokens.revoke(row.id)  # between the request's authentication and its work
    before = len(app.tokens.list())
    with pytest.raises(errors.Unauthorized):
        app.tokens.create(caller, "alpha", "member")
    assert len(app.tokens.list()) == before


def test_the_migration_brings_older_member_made_tokens_under_the_rule(config: Config) -> None:
    db = Database(config.db_path)
    db.migrate(until=14)
    rows = [  # id, role, expires_at, revoked_at, created_by
        ("m", "member", "2030-01-01T00:00:00.000000Z", "2024-01-01T00:00:00.000000Z", None),
        ("m.c", "member", None, None, "m"), ("m.c.g", "member", None, None, "m.c"),
        ("e", "member", "2030-01-01T00:00:00.000000Z", None, None),
        ("e.c", "member", None, None, "e"),
        ("e.c.g", "member", "2031-01-01T00:00:00.000000Z", None, "e.c"),
        ("e.s", "member", "2029-01-01T00:00:00.000000Z", None, "e"),
        ("a", "admin", "2030-01-01T00:00:00.000000Z", "2024-01-01T00:00:00.000000Z", None),
        ("a.c", "member", None, None, "a"),
    ]
    with db.write() as conn:
        conn.execute("INSERT INTO projects (name, created_at) VALUES ('alpha', 'x')")
        for token_id, role, expires_at, revoked_at, created_by in rows:
            conn.execute("INSERT INTO tokens (id, project, role, secret_hash, created_at, "
                         "expires_at, revoked_at, created_by) VALUES (?, 'alpha', ?, ?, 'x', ?, "
                         "?, ?)", (token_id, role, token_id, expires_at, revoked_at, created_by))
    assert db.migrate(until=15) == [15]
    with db.read() as conn:
        after = {row[0]: (row[1], row[2]) for row in conn.execute(
            "SELECT id, expires_at, revoked_at FROM tokens")}
    revoked, in_2030 = "2024-01-01T00:00:00.000000Z", "2030-01-01T00:00:00.000000Z"
    assert after["m.c"][1] == after["m.c.g"][1] == revoked
    assert after["e.c"] == after["e.c.g"] == (in_2030, None)
    assert after["e.s"] == ("2029-01-01T00:00:00.000000Z", None)  # already earlier: kept
    assert after["a.c"] == (None, None)  # an admin's making stands on its own
