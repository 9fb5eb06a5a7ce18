"""Who may do what: every route of the route table x every kind of caller, so a new route cannot
escape the check; tokens are never stored in clear text."""
from __future__ import annotations

import itertools
import secrets
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src import cli
from src.api.routes import Route
from src.app import App
from src.config import Config
from src.vocabulary import QUOTA_RESOURCES
from tests.conftest import make_qcow2
from tests.support import Client

CALLERS = ["nobody", "bad", "expired", "revoked", "other_member", "member", "admin"]
UNAUTHENTICATED = {"nobody", "bad", "expired", "revoked"}
# Path parameters that name one project's things (the World makes them in the member's).
# The caller's own VM has no snapshot s1 and no volume attached: its own things, not another's.
# This host has no GPUs, so no reservation can be booked: the member names one that is not
# there (tests/integration/test_reservations.py shows its owner and the others at work).
OWN_ABSENT = ("snapshot_not_found", "volume_not_attached", "reservation_not_found",
              "security_group_rule_not_found", "security_group_not_attached")
SCOPED = ("{vm}", "{task}", "{project}", "{image}", "{keypair}", "{token}", "{volume}",
          "{reservation}", "{group}")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp laptop"
_names = itertools.count()


@pytest.fixture
def config(config: Config) -> Config:
    # The matrix makes about a hundred VMs; capacity has its own tests.
    return replace(config, cpu_allocation_ratio=64.0, ram_allocation_ratio=8.0,
                   default_quota=(None,) * len(QUOTA_RESOURCES))


@pytest.fixture
def tokens(app: App) -> dict[str, str | None]:
    revoked_row, revoked = app.tokens.issue("alpha", "member")
    app.tokens.revoke(revoked_row.id)
    return {"nobody": None, "bad": "iaas_" + secrets.token_urlsafe(32),
            "expired": app.tokens.issue("alpha", "member", expires_in_s=-1)[1],
            "revoked": revoked, "other_member": app.tokens.issue("beta", "member")[1],
            "member": app.tokens.issue("alpha", "member")[1],
            "admin": app.tokens.issue("default", "admin")[1]}


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


class World:
    """Fresh things to aim each call at, so one call's effect never changes another's answer."""

    def __init__(self, app: App, config: Config, member: str) -> None:
        self.admin = Client(app)
        self.member = Client(app, token=member)
        self._volume: str | None = None
        make_qcow2(config.images_dir / "base.qcow2")
        assert self.admin.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                              "format": "qcow2"}).status == 201

    def volume(self) -> str:
        """The member's own volume with a snapshot s1: one for the whole test (the test
        driver's pool is small), made again when a route removed it or its snapshot."""
        if self._volume is not None:
            shown = self.member.get(f"/v1/volumes/{self._volume}")
            if shown.status == 200 and shown.body["task"]:  # what the last route queued
                self.member.wait_task(shown.body["task"]["id"])
            if self.member.get(f"/v1/volumes/{self._volume}").status == 404:
                self._volume = None
        if self._volume is None:
            reply = self.member.post("/v1/volumes", {"name": unique("vol"), "size_gb": 1})
            assert reply.status == 202, reply.body
            made = self.member.wait_task(reply.body["task"]["id"])
            assert made["status"] == "succeeded", made["error"]
            self._volume = reply.body["id"]
        snaps = self.member.get(f"/v1/volumes/{self._volume}/snapshots").body["snapshots"]
        if not any(snap["name"] == "s1" for snap in snaps):
            snap = self.member.post(f"/v1/volumes/{self._volume}/snapshots", {"name": "s1"})
            assert snap.status == 202, snap.body
            taken = self.member.wait_task(snap.body["task"]["id"])
            assert taken["status"] == "succeeded", taken["error"]
        return self._volume

    def params(self, route: Route) -> dict[str, str]:
        values: dict[str, str] = {}
        if "{vm}" in route.pattern or "{task}" in route.pattern:
            reply = self.member.post("/v1/vms", {"name": unique("vm"), "cpu": 1, "ram": 128,
                                                 "image_name": "base"})
            assert reply.status == 202, reply.body
            vm = reply.body
            self.member.wait_task(vm["task"]["id"])
            values.update(vm=vm["id"], task=vm["task"]["id"])
        if "{asset}" in route.pattern:
            values["asset"] = "app.js"
        if "{host}" in route.pattern:
            values["host"] = "local"
        if "{flavor}" in route.pattern:
            name = unique("fl")
            self.admin.post("/v1/flavors", {"name": name, "cpu": 1, "ram": 128, "disk_gb": 1})
            values["flavor"] = name
        if "{project}" in route.pattern:
            values["project"] = "alpha"  # the member's own project
        if "{token}" in route.pattern:  # a token the member made: its own to revoke
            reply = self.member.post("/v1/tokens", {"project": "alpha", "role": "member"})
            assert reply.status == 201, reply.body
            values["token"] = reply.body["id"]
        if "{image}" in route.pattern:  # the member's own (private) image, waiting for a file
            reply = self.member.post("/v1/images", {"name": unique("img"), "format": "qcow2"})
            assert reply.status == 201, reply.body
            values["image"] = reply.body["id"]  # admins name other projects' images by id
        if "{volume}" in route.pattern:  # the member's own volume, with a snapshot s1
            values["volume"] = self.volume()
        if "{snapshot}" in route.pattern:
            values["snapshot"] = "s1"  # the volume's; a VM's is not there (404 of its own)
        if "{reservation}" in route.pattern:
            values["reservation"] = "r-absent"
        if "{group}" in route.pattern:  # the member's own security group (no VM has it)
            name = unique("sg")
            reply = self.member.post("/v1/security-groups", {"name": name})
            assert reply.status == 201, reply.body
            values["group"] = name  # admins name another project's with ?project= (below)
        if "{rule}" in route.pattern:
            values["rule"] = "rule-absent"  # its own 404, like a VM's absent snapshot
        if "{network}" in route.pattern:
            values["network"] = "iaas-test"  # the host's own: listed, never deleted (409)
        if "{keypair}" in route.pattern:
            name = unique("key")
            assert self.member.post("/v1/keypairs", {"name": name, "public_key": KEY}).status == 201
            values["keypair"] = f"{name}?project=alpha"  # admins name another project's so
        return values


RULE = {"direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22,
        "cidr": "0.0.0.0/0"}


def body_for(route: Route) -> Any:
    if route.pattern == "/v1/security-groups/{group}/rules":
        return {"rules": [RULE]} if route.method == "PUT" else RULE
    if route.method == "PUT":
        return {"instances": 1000}
    if route.method != "POST":
        return None
    return {"/v1/vms": {"name": unique("new"), "cpu": 1, "ram": 128, "image_name": "base"},
            "/v1/images": {"name": unique("img"), "format": "qcow2"},
            "/v1/flavors": {"name": unique("fl"), "cpu": 1, "ram": 128, "disk_gb": 1},
            "/v1/keypairs": {"name": unique("key"), "public_key": KEY},
            "/v1/tokens": {"project": "alpha", "role": "member"},
            "/v1/volumes": {"name": unique("vol"), "size_gb": 1},
            "/v1/volumes/{volume}/resize": {"size_gb": 2},
            "/v1/volumes/{volume}/snapshots": {"name": unique("snap")},
            "/v1/volumes/{volume}/revert": {"snapshot": "s1"},
            "/v1/vms/{vm}/volumes": {"volume": unique("absent")},
            "/v1/vms/{vm}/snapshots": {"name": unique("snap")},
            "/v1/vms/{vm}/revert": {"snapshot": "s1"},
            "/v1/vms/{vm}/image": {"name": unique("img")},
            "/v1/security-groups": {"name": unique("sg")},
            "/v1/vms/{vm}/security-groups": {"name": "default"},
            "/v1/networks": {"name": unique("net"), "host": "local", "mode": "isolated",
                             "subnet": "10.253.0.0/24"},
            }.get(route.pattern)


def expected(route: Route, caller: str) -> str:
    if route.access == "public":
        return "allowed"
    if caller in UNAUTHENTICATED:
        return "401"
    if route.access == "admin":
        return "allowed" if caller == "admin" else "403"
    if caller == "other_member" and any(part in route.pattern for part in SCOPED):
        return "404"  # another project's VM, task, quota, image or keypair does not exist
    if caller == "other_member" and (route.method, route.pattern) == ("POST", "/v1/tokens"):
        return "403"  # a token of another project is more than a member may make
    return "allowed"


def test_every_route_for_every_caller(app: App, config: Config,
                                      tokens: dict[str, str | None]) -> None:
    world = World(app, config, tokens["member"] or "")
    routes = app.router.routes
    assert len(routes) >= 25 and {r.access for r in routes} == {"public", "member", "admin"}
    # Routes that empty or stop the host (a drain) go last: the others' set-up makes VMs there.
    emptying = [r for r in routes if r.pattern.startswith("/v1/hosts/{host}/")]
    ordered = [r for r in routes if r not in emptying] + emptying
    for route, caller in itertools.product(ordered, CALLERS):
        path = route.pattern.format(**world.params(route))
        if "{group}" in route.pattern:
            path += "?project=alpha"
        reply = Client(app, token=tokens[caller]).request(route.method, path, body_for(route))
        want = expected(route, caller)
        where = f"{route.method} {route.pattern} as {caller}: {reply.status} {reply.body}"
        if want == "allowed":
            assert reply.status not in (401, 403), where
            if any(part in route.pattern for part in SCOPED):
                assert reply.status != 404 or reply.error_code in OWN_ABSENT, where
        else:
            assert str(reply.status) == want, where
            code = {"401": "unauthorized", "403": "forbidden"}.get(want)
            assert reply.error_code in (code, "vm_not_found", "task_not_found",
                                        "project_not_found", "image_not_found",
                                        "keypair_not_found", "token_not_found",
                                        "volume_not_found", "reservation_not_found",
                                        "security_group_not_found"), where
        if want == "401":
            assert reply.headers["WWW-Authenticate"] == "Bearer", where


def test_members_see_only_their_projects_vms(app: App, config: Config,
                                             tokens: dict[str, str | None]) -> None:
    world = World(app, config, tokens["member"] or "")
    mine = world.member.post("/v1/vms", {"name": "mine", "cpu": 1, "ram": 128,
                                         "image_name": "base"}).body
    other = Client(app, token=tokens["other_member"])
    theirs = other.post("/v1/vms", {"name": "theirs", "cpu": 1, "ram": 128,
                                    "image_name": "base"}).body
    assert [vm["name"] for vm in world.member.get("/v1/vms").body["vms"]] == ["mine"]
    assert [vm["name"] for vm in other.get("/v1/vms").body["vms"]] == ["theirs"]
    assert sorted(vm["name"] for vm in world.admin.get("/v1/vms").body["vms"]) == ["mine", "theirs"]
    assert other.get("/v1/vms/mine").error_code == "vm_not_found"  # by name too
    assert other.get(f"/v1/vms?marker={mine['id']}").error_code == "marker_not_found"
    # Names are per project: another project's VM of that name is neither a clash nor revealed.
    same_name = other.post("/v1/vms", {"name": "mine", "cpu": 1, "ram": 128, "image_name": "base"})
    assert same_name.status == 202 and same_name.body["id"] != mine["id"]
    assert "alpha" not in str(same_name.body) and mine["id"] not in str(same_name.body)
    clash = other.post("/v1/vms", {"name": "mine", "cpu": 1, "ram": 128, "image_name": "base"})
    assert clash.status == 409 and clash.error_code == "name_conflict"
    assert other.get(f"/v1/tasks/{mine['task']['id']}?wait=1").error_code == "task_not_found"
    assert world.member.get(f"/v1/vms/{theirs['id']}").status == 404


def test_requests_cannot_set_what_they_must_not(app: App, config: Config,
                                                tokens: dict[str, str | None]) -> None:
    world = World(app, config, tokens["member"] or "")
    for field, value in (("project", "beta"), ("status", "running"), ("host", "h1"),
                         ("gpus", ["0000:3b:00.0"]), ("disk_path", "/etc/passwd"), ("id", "x")):
        reply = world.member.post("/v1/vms", {"name": unique("mass"), "cpu": 1, "ram": 128,
                                              "image_name": "base", field: value})
        if field == "host":  # a field admins may set (to pin a host), forbidden to members
            assert reply.status == 403 and reply.error_code == "forbidden", reply.body
        else:
            assert reply.status == 400 and reply.error_code == "validation_failed", field
    assert world.admin.get("/v1/vms").body["vms"] == []


def test_db_init_prints_and_files_the_admin_token_once_hashed_only(
        config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "secrets" / "admin-token"
    config = replace(config, admin_token_file=token_file)
    cli.db_init(config)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("IAAS_ADMIN_TOKEN=iaas_")
    secret = out[-1].partition("=")[2]
    assert token_file.read_text() == secret + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    cli.db_init(config)
    assert "IAAS_ADMIN_TOKEN" not in capsys.readouterr().out  # only on the run that made it
    assert secret.encode() not in config.db_path.read_bytes()
    for extra in config.db_path.parent.glob(config.db_path.name + "-*"):
        assert secret.encode() not in extra.read_bytes()
    from src.app import create_app
    app = create_app(config)
    try:
        assert Client(app, token=secret).get("/v1/gpus").status == 200
    finally:
        app.close()


def test_token_cli_creates_lists_and_revokes(app: App, config: Config,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IAAS_DB_PATH", str(config.db_path))
    assert cli.main(["token", "create", "--project", "team-c", "--role", "member",
                     "--expires-in-days", "2"]) == 0
    header, secret = capsys.readouterr().out.strip().splitlines()
    token_id = header.split()[1]
    member = Client(app, token=secret)
    assert member.get("/v1/vms").status == 200
    assert member.get("/v1/gpus").status == 403
    cli.main(["token", "list"])
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(token_id)]
    assert "team-c  member  expires 20" in listed[0]
    made = member.post("/v1/tokens", {"project": "team-c", "role": "member"}).body
    assert made["expires_at"] <= listed[0].split("expires ")[1].split()[0]  # not past its maker
    cli.main(["token", "revoke", token_id])
    assert capsys.readouterr().out.strip() == f"revoked {token_id} and 1 token(s) made from it"
    assert member.get("/v1/vms").status == 401
    assert Client(app, token=made["token"]).get("/v1/vms").status == 401
    with pytest.raises(SystemExit, match="project name"):
        cli.main(["token", "create", "--project", "Bad Name!", "--role", "member"])
