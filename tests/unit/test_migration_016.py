"""Migration 016 on a database of 015: public images (and their import tasks) move to the
reserved owner, admins' audit rows that did not touch their own project leave it, and the count
quotas come unlimited for existing projects."""
from __future__ import annotations

from pathlib import Path

from src.database.db import Database
from src.vocabulary import PUBLIC_IMAGES_OWNER

AT = "2026-12-01T00:00:00.000000Z"
PUBLIC, PRIVATE = "aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"
TASK, VM = "bbbbbbbb-0000-4000-8000-000000000001", "cccccccc-0000-4000-8000-000000000001"
# (token, path, status, resource_id, project before) -> project after
AUDIT = [
    ("admin", "/v1/flavors", 201, "f-1", "default", None),
    ("admin", "/v1/images", 201, PUBLIC, "default", PUBLIC_IMAGES_OWNER),
    ("admin", f"/v1/images/{PUBLIC}/file", 200, PUBLIC, "default", PUBLIC_IMAGES_OWNER),
    ("admin", "/v1/images", 201, PRIVATE, "default", "default"),
    ("admin", "/v1/images/gone", 204, None, "default", None),
    ("admin", "/v1/keypairs/k", 204, None, "default", None),
    ("admin", "/v1/keypairs", 201, "default", "default", "default"),
    ("admin", "/v1/hosts/h1", 204, None, "default", None),
    ("admin", "/v1/vms/nope/stop", 404, None, "default", None),
    ("admin", f"/v1/vms/{VM}/stop", 202, VM, "default", "default"),
    ("admin", "/v1/projects/team-a/quota", 200, "team-a", "team-a", "team-a"),
    ("member", "/v1/images", 201, PRIVATE, "default", "default"),
    ("member", "/v1/flavors", 403, None, "default", "default"),
]


def test_016_files_public_images_and_admins_rows_under_no_members_project(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate(until=15)
    with db.write() as conn:
        conn.execute("INSERT INTO projects (name, created_at) VALUES ('team-a', ?)", (AT,))
        for token, role in (("admin", "admin"), ("member", "member")):
            conn.execute("INSERT INTO tokens (id, project, role, secret_hash, created_at) "
                         "VALUES (?, 'default', ?, ?, ?)", (token, role, token, AT))
        for image, visibility in ((PUBLIC, "public"), (PRIVATE, "private")):
            conn.execute("INSERT INTO images (id, name, file, format, created_at, project, "
                         "visibility) VALUES (?, ?, ?, 'raw', ?, 'default', ?)",
                         (image, visibility, f"{image}.raw", AT, visibility))
        conn.execute("INSERT INTO tasks (id, action, status, created_at, project, image_id) "
                     "VALUES (?, 'import', 'succeeded', ?, 'default', ?)", (TASK, AT, PUBLIC))
        conn.executemany(
            "INSERT INTO audit_events (at, project, token_id, method, path, status, request_id, "
            "resource_id) VALUES (?, ?, ?, 'POST', ?, ?, 'req', ?)",
            [(AT, before, token, path, status, resource)
             for token, path, status, resource, before, _after in AUDIT])
    assert db.migrate(until=16) == [16]
    with db.read() as conn:
        owners = dict(conn.execute("SELECT id, project FROM images").fetchall())
        assert owners == {PUBLIC: PUBLIC_IMAGES_OWNER, PRIVATE: "default"}
        assert conn.execute("SELECT project FROM tasks").fetchone()[0] == PUBLIC_IMAGES_OWNER
        after = [row[0] for row in conn.execute("SELECT project FROM audit_events ORDER BY id")]
        assert after == [expected for *_, expected in AUDIT]
        for project in ("default", "team-a"):
            limits = dict(conn.execute("SELECT quota_images, quota_keypairs, quota_tokens "
                                       "FROM projects WHERE name = ?", (project,)).fetchone())
            assert list(limits.values()) == [None] * 3
