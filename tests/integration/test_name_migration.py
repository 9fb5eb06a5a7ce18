"""Migration 009 on a database of the previous schema: every row, index and foreign key is kept,
names become unique per project, and VMs made before keep their domain (named like the VM)."""
from __future__ import annotations

import sqlite3
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from src.app import App
from src.config import Config
from src.database.db import Database
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

VERSION = 9
NOW = "2026-01-01T00:00:00.000000Z"
IMAGE_ID = "00000000-0000-4000-8000-00000000000a"
LEGACY = {"legacy-01": ("11111111-0000-4000-8000-000000000001", "default"),
          "legacy-02": ("11111111-0000-4000-8000-000000000002", "alpha")}
GPU = "0000:3b:00.0"


def previous_schema(path: Path) -> Database:
    """A database migrated up to the version before ours, holding two VMs, a task and a GPU."""
    db = Database(path)
    db.migrate(until=VERSION - 1)
    with db.write() as conn:
        conn.execute("INSERT INTO images (id, name, file, format, created_at) "
                     "VALUES (?, 'base', 'base.qcow2', 'qcow2', ?)", (IMAGE_ID, NOW))
        for name, (vm_id, project) in LEGACY.items():
            conn.execute("INSERT INTO vms (id, name, cpu, ram, disk_gb, image_id, status, mac, "
                         "project, created_at, updated_at) VALUES (?, ?, 1, 128, 1, ?, 'running', "
                         "'52:54:00:00:00:01', ?, ?, ?)", (vm_id, name, IMAGE_ID, project, NOW, NOW))
        conn.execute("INSERT INTO tasks (id, vm_id, action, status, created_at, project) "
                     "VALUES ('t-1', ?, 'create', 'succeeded', ?, 'default')",
                     (LEGACY["legacy-01"][0], NOW))
        conn.execute("INSERT INTO gpus (id, vendor_id, product_id, refreshed_at) "
                     "VALUES (?, '10de', '1eb8', ?)", (GPU, NOW))
        conn.execute("INSERT INTO gpu_allocations (gpu_id, vm_id, allocated_at) VALUES (?, ?, ?)",
                     (GPU, LEGACY["legacy-01"][0], NOW))
    return db


def shape(conn: sqlite3.Connection) -> tuple[list[dict[str, object]], set[str]]:
    """(every vms row as a dict, the names of the indexes on vms we made)."""
    rows = [dict(row) for row in conn.execute("SELECT * FROM vms ORDER BY id")]
    indexes = {row["name"] for row in conn.execute("PRAGMA index_list(vms)")
               if not row["name"].startswith("sqlite_autoindex")}
    return rows, indexes


def test_the_migration_keeps_every_row_index_and_foreign_key(tmp_path: Path) -> None:
    db = previous_schema(tmp_path / "old.db")
    with db.read() as conn:
        rows_before, indexes_before = shape(conn)
    assert db.migrate(until=VERSION) == [VERSION]
    with db.read() as conn:
        rows_after, indexes_after = shape(conn)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        references = {row["table"] for row in conn.execute("PRAGMA foreign_key_list(gpu_allocations)")}
        kept = conn.execute("SELECT gpu_id, vm_id FROM gpu_allocations").fetchall()
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert [{key: row[key] for key in before} for row, before in zip(rows_after, rows_before)] \
        == rows_before  # every column of every row, unchanged (whatever columns it had)
    assert [row["domain_name"] for row in rows_after] == list(LEGACY)  # their domains' names
    assert indexes_after == indexes_before | {"vms_domain_name"}
    assert references == {"gpus", "vms"}
    assert [tuple(row) for row in kept] == [(GPU, LEGACY["legacy-01"][0])] and tasks == 1
    with db.write() as conn:  # the cascade still works on the rebuilt table
        conn.execute("DELETE FROM vms WHERE id = ?", (LEGACY["legacy-01"][0],))
        assert conn.execute("SELECT count(*) FROM gpu_allocations").fetchone()[0] == 0


def test_names_are_unique_per_project_after_the_migration(tmp_path: Path) -> None:
    db = previous_schema(tmp_path / "old.db")
    db.migrate()
    insert = ("INSERT INTO vms (id, name, domain_name, cpu, ram, disk_gb, image_id, status, "
              "project, created_at, updated_at) VALUES (?, 'legacy-01', ?, 1, 128, 1, ?, "
              "'running', ?, ?, ?)")
    with db.write() as conn:  # the same name in another project: fine
        conn.execute(insert, ("new-1", "iaas-new-1", IMAGE_ID, "alpha", NOW, NOW))
    with pytest.raises(sqlite3.IntegrityError), db.write() as conn:  # twice in one: not
        conn.execute(insert, ("new-2", "iaas-new-2", IMAGE_ID, "alpha", NOW, NOW))
    with pytest.raises(sqlite3.IntegrityError), db.write() as conn:  # one domain name per host
        conn.execute(insert, ("new-3", "legacy-01", IMAGE_ID, "beta", NOW, NOW))


def test_a_vm_made_before_keeps_working_through_its_old_domain(make_app: AppFactory,
                                                               config: Config) -> None:
    make_qcow2(config.images_dir / "base.qcow2")
    previous_schema(config.db_path)
    app: App = make_app(config)  # applies the migration
    client = Client(app)
    vm_id = LEGACY["legacy-01"][0]
    app.hypervisor.define(f"<domain type='test'><name>legacy-01</name><uuid>{vm_id}</uuid>"
                          "<memory>131072</memory><os><type>hvm</type></os></domain>")
    app.hypervisor.start(vm_id)
    deadline = time.monotonic() + 10
    while client.get(f"/v1/vms/{vm_id}").body["status"] != "running":  # the first sweep may
        assert time.monotonic() < deadline  # have found no domain yet: follow the host
        app.reconciler.check_now(vm_id)
        time.sleep(0.05)
    # The reconciler may still apply what the domain's define event showed (shut off) before
    # the start event puts it right: wait for the host's truth to settle.
    deadline = time.monotonic() + 10
    while (shown := client.get("/v1/vms/legacy-01").body)["status"] != "running":
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)
    assert (shown["id"], shown["status"], shown["power_state"]) == (vm_id, "running", "running")
    with app.db.read() as conn:
        assert conn.execute("SELECT domain_name FROM vms WHERE id = ?", (vm_id,)).fetchone()[0] \
            == "legacy-01"
    member = Client(app, token=app.tokens.issue("alpha", "member")[1])
    twin = member.post("/v1/vms", {"name": "legacy-01", "cpu": 1, "ram": 128, "image_name": "base"})
    assert twin.status == 202, twin.body  # the old domain's name is in nobody's way
    assert member.wait_task(twin.body["task"]["id"])["status"] == "succeeded"

    for action, state in (("stop", "shutoff"), ("start", "running")):
        reply = client.post(f"/v1/vms/legacy-01/{action}?project=default", None)
        assert client.wait_task(reply.body["id"])["status"] == "succeeded", action
        assert app.hypervisor.power_state(vm_id) == state
    assert ET.fromstring(app.hypervisor.domain_xml(vm_id)).findtext("name") == "legacy-01"
    assert client.get("/v1/vms/legacy-01").error_code == "ambiguous_name"
    deleted = client.delete("/v1/vms/legacy-01?project=default")
    assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
    assert app.hypervisor.power_state(vm_id) == "missing"
    assert client.get("/v1/vms/legacy-01").body["id"] == twin.body["id"]
    assert app.hypervisor.power_state(twin.body["id"]) == "running"


def test_a_migration_that_breaks_a_foreign_key_is_rolled_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrations run with foreign keys off (a rebuild must not cascade), so they are checked."""
    steps = [(1, "CREATE TABLE a (id TEXT PRIMARY KEY)"),
             (2, "CREATE TABLE b (a_id TEXT REFERENCES a(id)); INSERT INTO b VALUES ('none')")]
    monkeypatch.setattr("src.database.db._migrations", lambda: steps)
    db = Database(tmp_path / "fk.db")
    with pytest.raises(sqlite3.IntegrityError, match="migration 2 breaks foreign keys"):
        db.migrate()
    with db.read() as conn:
        assert [row[0] for row in conn.execute("SELECT version FROM schema_migrations")] == [1]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'b'").fetchone() is None
