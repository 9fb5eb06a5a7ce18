"""`iaas` as a user runs it, without a terminal: tables, -o json, waiting, errors, exit codes."""
from __future__ import annotations

import hashlib
import io
import json
import socket
from pathlib import Path

import pytest

from src.app import App
from src.client.http import Api, Refused
from tests.cli.conftest import Iaas
from tests.conftest import make_qcow2

VM = ("--image", "base", "--cpu", "1", "--ram", "128")


def test_a_vm_is_created_stopped_started_and_deleted_waiting_each_time(iaas: Iaas) -> None:
    made = iaas("vm", "create", "demo", *VM, "--wait")
    assert made.returncode == 0, made.stderr
    assert "running" in made.stdout and "demo" in made.stdout
    assert "create demo: queued" in made.stderr or "create demo: running" in made.stderr
    assert "create demo: succeeded" in made.stderr  # plain lines without a terminal
    assert "Traceback" not in made.stderr
    listed = iaas("vm", "list")
    assert listed.returncode == 0 and "NAME" in listed.stdout and "demo" in listed.stdout
    for action, status in (("stop", "stopped"), ("start", "running")):
        done = iaas("vm", action, "demo", "--wait")
        assert done.returncode == 0, done.stderr
        assert iaas.api("GET", "/v1/vms/demo").body["status"] == status
        assert status in done.stdout
    gone = iaas("vm", "delete", "demo", "--wait")
    assert gone.returncode == 0 and "succeeded" in gone.stdout, gone.stderr
    missing = iaas("vm", "show", "demo")
    assert missing.returncode == 1
    assert "error: vm_not_found: VM 'demo' does not exist. (request req-" in missing.stderr


def test_json_output_is_exactly_the_apis_json(iaas: Iaas) -> None:
    made = iaas("-o", "json", "vm", "create", "j1", *VM, "--wait")
    assert made.returncode == 0, made.stderr
    vm = json.loads(made.stdout)  # only the final object on stdout; status lines on stderr
    assert vm["status"] == "running" and vm["name"] == "j1"
    for args, path in ((("vm", "show", "j1"), "/v1/vms/j1"), (("vm", "list"), "/v1/vms"),
                       (("flavor", "list"), "/v1/flavors"), (("image", "list"), "/v1/images"),
                       (("host", "list"), "/v1/hosts"), (("gpu", "list"), "/v1/gpus"),
                       (("quota", "show", "default"), "/v1/projects/default/quota"),
                       (("flavor", "availability", "small"),
                        "/v1/flavors/small/availability"),
                       (("vm", "events", "j1"), "/v1/vms/j1/events")):
        printed = iaas.json(*args)
        assert printed == iaas.api("GET", path).body, args


def test_without_a_terminal_a_create_does_not_wait_unless_asked(iaas: Iaas) -> None:
    done = iaas("-o", "json", "vm", "create", "nw", *VM)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["status"] == "building" and body["task"]["status"] in ("queued", "running")
    assert f"iaas task wait {body['task']['id']}" in done.stderr
    waited = iaas("task", "wait", body["task"]["id"])
    assert waited.returncode == 0 and "succeeded" in waited.stdout


def test_exit_codes_say_usage_refusal_and_unreachable(iaas: Iaas, app: App) -> None:
    assert iaas("vm", "frobnicate").returncode == 2
    no_size = iaas("vm", "create", "x", "--image", "base")
    assert no_size.returncode == 2 and "--flavor" in no_size.stderr
    bad = iaas("vm", "create", "Bad_Name", *VM)
    assert bad.returncode == 1 and "error: validation_failed" in bad.stderr
    assert "  name: " in bad.stderr  # each offending field on its own line
    member = iaas.as_token(app.tokens.issue("team-a", "member")[1])
    forbidden = member("gpu", "list")
    assert forbidden.returncode == 1 and "error: forbidden" in forbidden.stderr
    nobody = iaas.as_token("iaas_not-a-token")("vm", "list")
    assert nobody.returncode == 1 and "error: unauthorized" in nobody.stderr
    with socket.socket() as spare:  # a port nothing listens on
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    away = Iaas(f"http://127.0.0.1:{port}", iaas.token, iaas.cwd)("vm", "list")
    assert away.returncode == 3 and f"127.0.0.1:{port} does not answer" in away.stderr
    assert bad.stderr.count("Traceback") + away.stderr.count("Traceback") == 0
    assert iaas("vm", "list", IAAS_URL="ftp://x").returncode == 2
    assert iaas("--url", iaas.url, "vm", "list", IAAS_URL="ftp://x").returncode == 0


def test_the_token_comes_from_the_option_the_variable_or_the_admin_file(iaas: Iaas,
                                                                      tmp_path: Path) -> None:
    anonymous = iaas.as_token(None)
    assert anonymous("vm", "list").returncode == 1  # no token anywhere: 401
    (iaas.cwd / "iaas-admin-token").write_text((iaas.token or "") + "\n")
    assert anonymous("vm", "list").returncode == 0  # ./iaas-admin-token, as make serve leaves it
    other = tmp_path / "elsewhere"
    other.write_text("iaas_wrong\n")
    assert anonymous("--token-file", str(other), "vm", "list").returncode == 1
    missing = anonymous("--token-file", str(tmp_path / "nope"), "vm", "list")
    assert missing.returncode == 2 and "cannot read the token file" in missing.stderr


def test_tokens_are_made_listed_and_revoked(iaas: Iaas) -> None:
    made = iaas("token", "create", "--project", "team-a", "--role", "member",
                "--expires-in-days", "1")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("iaas_") and "shown only now" in made.stderr
    member = iaas.as_token(secret)
    assert member("vm", "list").returncode == 0
    assert member("token", "create", "--project", "team-a", "--role", "admin").returncode == 1
    listed = iaas("token", "list")
    assert "team-a" in listed.stdout and secret not in listed.stdout
    token_id = next(t["id"] for t in iaas.json("token", "list")["tokens"]
                    if t["project"] == "team-a")
    assert iaas("token", "revoke", token_id).returncode == 0
    assert member("vm", "list").returncode == 1


def test_quotas_hosts_flavors_and_images_by_command(iaas: Iaas) -> None:
    assert iaas("token", "create", "--project", "team-b").returncode == 0
    limited = iaas("quota", "set", "team-b", "--instances", "3", "--gpus", "unlimited")
    assert limited.returncode == 0, limited.stderr
    quota = iaas.json("quota", "show", "team-b")
    assert quota["limits"]["instances"] == 3 and quota["limits"]["gpus"] is None
    assert "unlimited" in iaas("quota", "show", "team-b").stdout
    assert iaas("quota", "set", "team-b", "--ram", "lots").returncode == 2
    assert iaas("host", "disable", "local").returncode == 0
    assert iaas.json("host", "show", "local")["enabled"] is False
    assert iaas("host", "enable", "local").returncode == 0
    assert "small" in iaas("flavor", "list").stdout
    assert iaas("image", "register", "again", "base.qcow2").returncode == 0
    assert "again" in iaas("image", "list").stdout
    assert iaas("image", "delete", "again").returncode == 0
    assert iaas("image", "show", "again").returncode == 1


def test_upload_lands_an_image_and_a_bad_file_says_why(iaas: Iaas, tmp_path: Path) -> None:
    good = tmp_path / "disk.qcow2"
    make_qcow2(good)
    shown = iaas.json("image", "upload", "up1", str(good))
    assert shown["status"] == "active"
    assert shown["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert shown == iaas.api("GET", "/v1/images/up1").body
    bad = tmp_path / "junk.qcow2"
    bad.write_bytes(b"QFI\xfb" + bytes(1020))  # the magic, then nothing a qcow2 needs
    done = iaas("image", "upload", "up2", str(bad))
    assert done.returncode == 1 and "error: image_file_invalid" in done.stderr
    assert iaas.api("GET", "/v1/images/up2").body["status"] == "error"


def test_an_upload_the_server_refuses_midway_reports_the_apis_error(iaas: Iaas) -> None:
    """The client's streamed upload (PUT /v1/images/{id}/file) against a server that answers
    before reading the body: the API's error, not a broken pipe."""
    sent: list[int] = []
    body = io.BytesIO(bytes(32 * 1024 * 1024))
    with pytest.raises(Refused) as refused:
        Api(iaas.url, iaas.token).upload("/v1/images/nothing/file", body, 32 * 1024 * 1024,
                                         sent.append)
    assert refused.value.code == "image_not_found"
    assert refused.value.request_id and refused.value.request_id.startswith("req-")
