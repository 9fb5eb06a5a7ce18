"""The audit files every mutating request under the project of what the service touched, never
the admin token's own project by default: members read their project's trail and nothing of an
admin's flavors or public images."""
from __future__ import annotations

from pathlib import Path

from src.app import App
from src.vocabulary import PUBLIC_IMAGES_OWNER
from tests.conftest import make_qcow2
from tests.support import Client

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp laptop"


def member_of(app: App, project: str) -> Client:
    return Client(app, token=app.tokens.issue(project, "member")[1])


def trail(client: Client) -> list[tuple[str, str, int, str | None]]:
    return [(e["method"], e["path"], e["status"], e["project"])
            for e in client.get("/v1/events").body["events"]]


def test_an_admins_deletes_are_filed_under_the_project_they_touched(app: App,
                                                                    client: Client) -> None:
    team_a = member_of(app, "team-a")
    image = team_a.post("/v1/images", {"name": "theirs", "format": "raw"}).body
    assert team_a.post("/v1/keypairs", {"name": "k", "public_key": KEY}).status == 201
    assert client.delete(f"/v1/images/{image['id']}").status == 204
    assert client.delete("/v1/keypairs/k?project=team-a").status == 204
    deletes = [(e["path"], e["project"]) for e in client.get("/v1/events?method=DELETE")
               .body["events"]]
    assert deletes == [("/v1/keypairs/k", "team-a"), (f"/v1/images/{image['id']}", "team-a")]
    seen = trail(team_a)  # and team-a's members read them
    assert ("DELETE", f"/v1/images/{image['id']}", 204, "team-a") in seen
    assert ("DELETE", "/v1/keypairs/k", 204, "team-a") in seen
    assert all(project == "team-a" for *_, project in seen)


def test_an_admins_flavors_and_public_images_reach_no_members_trail(app: App, client: Client,
                                                                    tmp_path: Path) -> None:
    default_member = member_of(app, "default")  # the project of the tests' admin token
    team_a = member_of(app, "team-a")
    assert client.post("/v1/flavors", {"name": "f1", "cpu": 1, "ram": 128,
                                       "disk_gb": 1}).status == 201
    public = client.post("/v1/images", {"name": "golden", "format": "qcow2"}).body
    data = make_qcow2(tmp_path / "golden.qcow2").read_bytes()
    assert client.request("PUT", f"/v1/images/{public['id']}/file", raw=data,
                          content_type="application/octet-stream").status == 200
    assert client.delete("/v1/images/golden").status == 204
    assert client.delete("/v1/flavors/f1").status == 204
    assert client.delete("/v1/images/nothing-here").status == 404  # a refusal touches nothing
    private = client.post("/v1/images", {"name": "mine", "format": "raw",
                                         "visibility": "private"}).body
    assert trail(team_a) == []
    assert trail(default_member) == [("POST", "/v1/images", 201, "default")]  # its own image
    admins = trail(client)
    assert admins[1:] == [
        ("DELETE", "/v1/images/nothing-here", 404, None),
        ("DELETE", "/v1/flavors/f1", 204, None),
        ("DELETE", "/v1/images/golden", 204, PUBLIC_IMAGES_OWNER),
        ("PUT", f"/v1/images/{public['id']}/file", 200, PUBLIC_IMAGES_OWNER),
        ("POST", "/v1/images", 201, PUBLIC_IMAGES_OWNER),
        ("POST", "/v1/flavors", 201, None)]
    assert client.get("/v1/events?resource_id=" + private["id"]).body["events"][0][
        "project"] == "default"


def test_a_members_refusals_stay_in_its_own_trail(app: App) -> None:
    team_a = member_of(app, "team-a")
    assert team_a.post("/v1/flavors", {"name": "f", "cpu": 1, "ram": 128,
                                       "disk_gb": 1}).status == 403
    assert team_a.delete("/v1/images/none").status == 404
    assert [project for *_, project in trail(team_a)] == ["team-a", "team-a"]
