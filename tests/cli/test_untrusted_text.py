"""Strings tenants write reach operators' terminals as text (review L1): descriptions must be
printable, and both CLIs print what older rows hold with control characters escaped and Rich
markup literal. The `iaas` lists follow every page."""
from __future__ import annotations

import hashlib
import secrets
import uuid

import pytest

from src import cli
from src.app import App
from src.database import tokens as token_dao
from src.utils.clock import utc_now
from src.vocabulary import PUBLIC_IMAGES_OWNER
from tests.cli.conftest import Iaas

# The review's description: clear screen, cursor home, an OSC 8 link, a forged second line.
HOSTILE = ("x\u001b[2J\u001b[1;1Hall tokens revoked OK\u001b]8;;http://evil.example/\u0007click"
           "\u001b]8;;\u0007\nFAKE-LINE admin default never")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp"


def old_token(app: App, description: str) -> str:
    """A token row from before descriptions were checked, written straight by the DAO."""
    row = token_dao.TokenRow(
        id=str(uuid.uuid4()), project="team-a", role="member",
        secret_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
        description=description, created_at=utc_now(), expires_at=None, revoked_at=None)
    with app.db.write() as conn:
        conn.execute("INSERT OR IGNORE INTO projects (name, created_at) VALUES ('team-a', ?)",
                     (row.created_at,))
        token_dao.insert(conn, row)
    return row.id


def test_a_description_with_control_characters_is_refused(iaas: Iaas) -> None:
    for description in (HOSTILE, "two\nlines", "bell\u0007", "flip\u202edcba"):
        reply = iaas.api("POST", "/v1/tokens", {"project": "team-a", "role": "member",
                                                "description": description})
        assert reply.status == 400, (description, reply.body)
        assert reply.body["error"]["details"]["errors"][0]["field"] == "description"
    made = iaas("token", "create", "--project", "team-a", "--description", "bell\u0007")
    assert made.returncode == 1 and "description" in made.stderr
    assert iaas.api("POST", "/v1/tokens", {"project": "team-a", "role": "member",
                                           "description": "CI bot, 日本 ✓"}).status == 201


def test_iaas_token_list_prints_old_escapes_escaped(iaas: Iaas, app: App) -> None:
    token_id = old_token(app, HOSTILE)
    listed = iaas("token", "list")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert not any(line.lstrip().startswith("FAKE-LINE") for line in listed.stdout.splitlines())
    line = next(line for line in listed.stdout.splitlines() if token_id in line)
    assert "x\\x1b[2J\\x1b[1;1Hall tokens revoked OK\\x1b]8;;" in line
    assert "\\nFAKE-LINE" in line


def test_the_operator_token_list_prints_old_escapes_escaped(
        app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token_id = old_token(app, HOSTILE + " back\\slash")
    monkeypatch.setenv("IAAS_DB_PATH", str(app.config.db_path))
    assert cli.main(["token", "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    (line,) = [line for line in out.splitlines() if token_id in line]
    assert line.endswith("\\x1b]8;;\\x07\\nFAKE-LINE admin default never back\\\\slash")
    with pytest.raises(SystemExit, match="printable"):
        cli.main(["token", "create", "--project", "team-a", "--role", "member",
                  "--description", "a\x1b[2Jb"])


def test_rich_markup_in_tenant_text_prints_literally(iaas: Iaas) -> None:
    made = iaas.api("POST", "/v1/tokens", {"project": "team-a", "role": "member",
                                           "description": "ci [/bold] bot"})
    assert made.status == 201, made.body
    for who in (iaas, iaas.as_token(made.body["token"])):  # the admin and the member
        listed = who("token", "list")
        assert listed.returncode == 0, listed.stderr
        assert "ci [/bold] bot" in listed.stdout
    member = iaas.as_token(made.body["token"])
    key = f"{KEY} [link=http://evil.example/]me[/link]"
    assert member.api("POST", "/v1/keypairs", {"name": "k", "public_key": key}).status == 201
    shown = member("keypair", "show", "k")
    assert shown.returncode == 0, shown.stderr
    assert "[link=http://evil.example/]me[/link]" in shown.stdout
    assert "\x1b]8;" not in shown.stdout


def test_image_list_follows_every_page_and_shows_missing_files(iaas: Iaas, app: App) -> None:
    with app.db.write() as conn:  # more images than one page holds (1,000)
        conn.executemany(
            "INSERT INTO images (id, name, file, format, created_at, project, visibility, "
            "status, origin) VALUES (?, ?, ?, 'raw', ?, ?, 'public', 'pending', 'upload')",
            [(str(uuid.uuid4()), f"bulk-{index:04d}", f"bulk-{index}.raw",
              f"2026-01-01T00:00:00.{index:06d}Z", PUBLIC_IMAGES_OWNER) for index in range(1005)])
    printed = iaas.json("image", "list")
    assert len(printed["images"]) == 1006 and "next_marker" not in printed
    assert len({image["id"] for image in printed["images"]}) == 1006
    assert app.intake.images.seed("Ubuntu-Base-22.04", "ubuntu-test.qcow2", "qcow2")
    table = iaas("image", "list")
    assert table.returncode == 0, table.stderr
    assert "bulk-1004" in table.stdout
    line = next(line for line in table.stdout.splitlines() if "Ubuntu-Base-22.04" in line)
    assert "missing_file" in line


def test_keypair_and_token_lists_follow_every_page(iaas: Iaas, app: App) -> None:
    with app.db.write() as conn:
        conn.executemany(
            "INSERT INTO keypairs (project, name, public_key, fingerprint, created_at) "
            "VALUES ('default', ?, ?, 'SHA256:x', ?)",
            [(f"k{index:04d}", KEY, utc_now()) for index in range(1003)])
    assert len(iaas.json("keypair", "list")["keypairs"]) == 1003
    for _ in range(3):
        old_token(app, "bulk")
    with app.db.write() as conn:  # 1,000 more, written straight, so the walk takes two pages
        conn.executemany(
            "INSERT INTO tokens (id, project, role, secret_hash, description, created_at) "
            "VALUES (?, 'team-a', 'member', ?, 'bulk', ?)",
            [(str(uuid.uuid4()), secrets.token_hex(32), utc_now()) for _ in range(1000)])
    tokens = iaas.json("token", "list")["tokens"]
    assert len(tokens) >= 1003 and len({token["id"] for token in tokens}) == len(tokens)
    newest = iaas.as_token(app.tokens.issue("team-b", "admin")[1])  # on the second page
    shown = newest("quota", "show")  # finds its own token across the pages
    assert shown.returncode == 0 and "project team-b" in shown.stdout, shown.stderr
    assert "tokens" in shown.stdout and "images_gb" in shown.stdout
