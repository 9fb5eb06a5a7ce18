"""GET /v1/images, /v1/keypairs and /v1/tokens are paged as /v1/vms is: limit (1-1000, default
1000), marker, next_marker on a full page; a marker the caller cannot see is 400."""
from __future__ import annotations

from typing import Any

import pytest

from src.app import App
from tests.support import Client

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp k"


def walk(client: Client, path: str, key: str, limit: int) -> list[list[Any]]:
    """Every page of the list, following next_marker."""
    pages, marker = [], None
    while True:
        query = f"?limit={limit}" + (f"&marker={marker}" if marker else "")
        body = client.get(path + query).body
        pages.append(body[key])
        marker = body.get("next_marker")
        if marker is None:
            return pages


@pytest.fixture
def member(app: App) -> Client:
    return Client(app, token=app.tokens.issue("team-a", "member")[1])


def test_images_page_oldest_first(app: App, client: Client, member: Client) -> None:
    made = [member.post("/v1/images", {"name": f"i{index}", "format": "raw"}).body["id"]
            for index in range(5)]
    client.post("/v1/images", {"name": "other", "format": "raw", "visibility": "private"})
    pages = walk(member, "/v1/images", "images", 2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [image["id"] for page in pages for image in page] == made
    whole = member.get("/v1/images").body
    assert "next_marker" not in whole and len(whole["images"]) == 5
    assert member.get("/v1/images?limit=5").body["next_marker"] == made[-1]
    assert len(client.get("/v1/images").body["images"]) == 6  # admins: every project's
    hidden = client.get("/v1/images?limit=6").body["images"][-1]["id"]
    for marker in (hidden, "00000000-0000-4000-8000-000000000000"):
        refused = member.get(f"/v1/images?marker={marker}")
        assert (refused.status, refused.error_code) == (400, "marker_not_found")
    for query in ("limit=0", "limit=1001", "marker=i1", "colour=red"):
        assert member.get(f"/v1/images?{query}").status == 400, query


def test_keypairs_page_by_project_and_name(app: App, client: Client, member: Client) -> None:
    for name in ("b", "a", "c"):
        assert member.post("/v1/keypairs", {"name": name, "public_key": KEY}).status == 201
    assert client.post("/v1/keypairs", {"name": "a", "public_key": KEY}).status == 201
    first = member.get("/v1/keypairs?limit=2").body
    assert [k["name"] for k in first["keypairs"]] == ["a", "b"]
    assert first["next_marker"] == "team-a/b"
    rest = member.get(f"/v1/keypairs?limit=2&marker={first['next_marker']}").body
    assert [k["name"] for k in rest["keypairs"]] == ["c"] and "next_marker" not in rest
    every = walk(client, "/v1/keypairs", "keypairs", 1)
    assert [(k["project"], k["name"]) for page in every for k in page] == [
        ("default", "a"), ("team-a", "a"), ("team-a", "b"), ("team-a", "c")]
    for marker in ("default/a", "team-a/zz"):  # another project's, or none
        assert member.get(f"/v1/keypairs?marker={marker}").error_code == "marker_not_found"
    assert member.get("/v1/keypairs?marker=no-slash").status == 400


def test_tokens_page_and_members_page_only_their_own(app: App, client: Client,
                                                    member: Client) -> None:
    made = [member.post("/v1/tokens", {"project": "team-a", "role": "member"}).body["id"]
            for _ in range(3)]
    neighbour = app.tokens.issue("team-a", "member")[0]
    pages = walk(member, "/v1/tokens", "tokens", 2)
    listed = [token["id"] for page in pages for token in page]
    assert listed[1:] == made and len(listed) == 4  # its own first, then those it made
    assert pages[0][0]["current"]
    refused = member.get(f"/v1/tokens?marker={neighbour.id}")
    assert (refused.status, refused.error_code) == (400, "marker_not_found")
    every = [token["id"] for page in walk(client, "/v1/tokens", "tokens", 3) for token in page]
    assert set(made) | {neighbour.id} <= set(every)
    assert every == [token["id"] for token in client.get("/v1/tokens").body["tokens"]]
