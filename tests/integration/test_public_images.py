"""Public images are no project's: no member owns one, whatever project made it (review H1); an
admin names its own project's private images (L5); an image without its file is missing_file,
never active, and boots nothing until the file is there."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from src.app import App
from src.config import Config
from src.vocabulary import PUBLIC_IMAGES_OWNER
from tests.conftest import make_qcow2
from tests.support import Client

SEED = ("Ubuntu-Base-22.04", "ubuntu-test.qcow2", "qcow2")
VM = {"cpu": 1, "ram": 128}


def member_of(app: App, project: str) -> Client:
    return Client(app, token=app.tokens.issue(project, "member")[1])


def upload_to(client: Client, image_id: str, data: bytes) -> int:
    return client.request("PUT", f"/v1/images/{image_id}/file", raw=data,
                          content_type="application/octet-stream").status


def test_a_member_of_an_admins_project_owns_none_of_its_public_images(
        app: App, client: Client, tmp_path: Path) -> None:
    data = make_qcow2(tmp_path / "attacker.qcow2").read_bytes()
    assert app.intake.images.seed(*SEED)
    default_member = member_of(app, "default")  # the project of the tests' admin token
    golden = client.post("/v1/images", {"name": "golden-base", "format": "qcow2"}).body
    assert upload_to(default_member, golden["id"], data) == 403
    shown = client.get(f"/v1/images/{golden['id']}").body
    assert (shown["status"], shown["sha256"]) == ("pending", None)  # nothing of the member's
    refused = default_member.delete(f"/v1/images/{SEED[0]}")
    assert (refused.status, refused.error_code) == (403, "forbidden")
    assert client.get(f"/v1/images/{SEED[0]}").status == 200
    assert (golden["visibility"], golden["project"]) == ("public", PUBLIC_IMAGES_OWNER)
    with app.db.write() as conn:  # a public image filed under a project (as before 016)
        conn.execute("UPDATE images SET project = 'default' WHERE id = ?", (golden["id"],))
    assert upload_to(default_member, golden["id"], data) == 403  # visibility decides
    assert default_member.delete(f"/v1/images/{golden['id']}").status == 403

    team_b_admin = Client(app, token=app.tokens.issue("team-b", "admin")[1])
    ops = team_b_admin.post("/v1/images", {"name": "ops-golden", "format": "qcow2"}).body
    assert ops["project"] == PUBLIC_IMAGES_OWNER
    team_b = member_of(app, "team-b")
    assert upload_to(team_b, ops["id"], data) == 403
    assert team_b.delete("/v1/images/ops-golden").status == 403
    own = team_b.post("/v1/images", {"name": "own", "format": "qcow2"}).body
    assert upload_to(team_b, own["id"], data) == 200  # its own private image is its own
    assert team_b.delete("/v1/images/own").status == 204
    assert upload_to(team_b_admin, ops["id"], data) == 200  # admins own every image
    assert member_of(app, "team-a").get("/v1/images/ops-golden").body["status"] == "active"


def test_no_token_can_belong_to_the_owner_of_public_images(client: Client, app: App) -> None:
    refused = client.post("/v1/tokens", {"project": PUBLIC_IMAGES_OWNER, "role": "admin"})
    assert refused.status == 400
    with pytest.raises(ValueError, match="project name"):
        app.tokens.issue(PUBLIC_IMAGES_OWNER, "member")
    assert client.get(f"/v1/projects/{PUBLIC_IMAGES_OWNER}/quota").status == 404


def test_an_admin_names_its_own_projects_private_images(app: App, client: Client) -> None:
    private = client.post("/v1/images", {"name": "adm-priv", "format": "raw",
                                         "visibility": "private"}).body
    assert private["project"] == "default"
    assert client.get("/v1/images/adm-priv").body["id"] == private["id"]
    theirs = member_of(app, "team-a").post("/v1/images", {"name": "theirs",
                                                          "format": "raw"}).body
    assert client.get("/v1/images/theirs").status == 404  # a private name of another project
    assert client.get(f"/v1/images/{theirs['id']}").status == 200  # by id: any
    assert client.delete("/v1/images/adm-priv").status == 204
    assert client.get(f"/v1/images/{private['id']}").status == 404


def test_an_image_without_its_file_is_missing_file_until_the_file_comes(
        app: App, client: Client, config: Config) -> None:
    assert app.intake.images.seed(*SEED)  # as db-init registers it: no file yet
    listed = {image["name"]: image for image in client.get("/v1/images").body["images"]}
    assert listed[SEED[0]]["status"] == "missing_file"
    image_id = listed[SEED[0]]["id"]
    assert client.get(f"/v1/images/{image_id}").body["status"] == "missing_file"
    refused = member_of(app, "team-a").post("/v1/vms", {"name": "vm", **VM,
                                                        "image_name": SEED[0]})
    assert (refused.status, refused.error_code) == (409, "image_file_missing")
    assert SEED[1] in refused.body["error"]["message"]
    make_qcow2(config.images_dir / SEED[1])
    assert client.get(f"/v1/images/{image_id}").body["status"] == "active"
    created = client.post("/v1/vms", {"name": "vm", **VM, "image_name": SEED[0]})
    assert created.status == 202, created.body
    shown = client.get(f"/v1/images/{image_id}").body
    assert shown["sha256"] and shown["virtual_size_bytes"]  # read from the file at first use


def test_a_removed_file_shows_and_registering_another_file_makes_it_active(
        app: App, client: Client, config: Config) -> None:
    make_qcow2(config.images_dir / "base.qcow2")
    base = client.post("/v1/images", {"name": "base", "format": "qcow2",
                                      "file": "base.qcow2"}).body
    assert base["status"] == "active"
    shutil.move(config.images_dir / "base.qcow2", config.images_dir / "elsewhere.qcow2")
    assert client.get("/v1/images/base").body["status"] == "missing_file"
    assert app.intake.images.seed("base", "elsewhere.qcow2", "qcow2")  # re-registered there
    shown = client.get("/v1/images/base").body
    assert (shown["id"], shown["file"], shown["status"]) == (base["id"], "elsewhere.qcow2",
                                                             "active")
    assert not app.intake.images.seed("base", "other.qcow2", "qcow2")  # has its file: stays


def test_the_missing_file_check_keeps_the_list_cheap(app: App, client: Client,
                                                     config: Config) -> None:
    make_qcow2(config.images_dir / "base.qcow2")
    with app.db.write() as conn:  # 1,000 registered images: one stat each per list
        conn.executemany(
            "INSERT INTO images (id, name, file, format, created_at, project, visibility) "
            "VALUES (?, ?, ?, 'qcow2', '2026-01-01T00:00:00Z', ?, 'public')",
            [(f"00000000-0000-4000-8000-{index:012d}", f"img-{index}",
              "base.qcow2" if index % 2 else "gone.qcow2", PUBLIC_IMAGES_OWNER)
             for index in range(1000)])
    images = app.intake.images
    rows = images.list(None)
    started = time.perf_counter()
    seen = [images.as_seen(row) for row in rows]
    elapsed = time.perf_counter() - started
    assert sorted({row.status for row in seen}) == ["active", "missing_file"]
    assert elapsed < 0.25, f"1,000 stats took {elapsed * 1000:.0f} ms"  # ~2 ms when idle
