"""Security groups on the test driver: CRUD, the default group, tenancy, bad input changing
nothing, quotas, attaching to VMs, and the nwfilter each VM's NIC names. (The test driver has
no nwfilter driver: the filter's XML is checked as rendered, and tests/e2e/test_security_groups.py
reads it back from libvirt.)"""
from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.database import security_groups as group_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.hypervisor.nwfilter_xml import filter_name, render_filter
from src.services.security.firewall import Firewall, settle, spec_of
from src.utils.clock import utc_now
from tests.conftest import AppFactory
from tests.support import Client

GOLDEN = Path(__file__).parent / "golden" / "nwfilter-default.xml"
WEB = {"direction": "ingress", "protocol": "tcp", "port_min": 80, "cidr": "10.0.0.0/8"}


@pytest.fixture
def alpha(app: App) -> Client:
    return Client(app, token=app.tokens.issue("team-a", "member")[1])


@pytest.fixture
def beta(app: App) -> Client:
    return Client(app, token=app.tokens.issue("team-b", "member")[1])


def create_vm(client: Client, name: str, **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256, "image_name": "base",
                                    **extra})
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    return dict(client.get(f"/v1/vms/{reply.body['id']}").body)


def rendered(app: App, vm_id: str) -> str:
    with app.db.read() as conn:
        return render_filter(spec_of(conn, vm_id))


def accepts(xml: str) -> list[dict[str, str]]:
    """The inbound accept rules a filter holds beyond its fixed ones (priority 500)."""
    return [{"protocol": child.tag, **child.attrib} for rule in ET.fromstring(xml)
            if rule.tag == "rule" and rule.get("priority") == "500" for child in rule]


def test_a_project_gets_a_default_group_on_first_use(alpha: Client) -> None:
    groups = alpha.get("/v1/security-groups")
    assert groups.status == 200
    (default,) = groups.body["security_groups"]
    assert default["name"] == "default" and default["project"] == "team-a"
    rules = [{key: rule[key] for key in ("protocol", "port_min", "port_max", "cidr", "group")}
             for rule in default["rules"]]
    assert rules == [
        {"protocol": "tcp", "port_min": 22, "port_max": 22, "cidr": "0.0.0.0/0", "group": None},
        {"protocol": "all", "port_min": None, "port_max": None, "cidr": None,
         "group": "default"}]
    assert alpha.get("/v1/security-groups").body["security_groups"] == [default]  # once


def test_groups_are_created_shown_changed_and_deleted(alpha: Client) -> None:
    made = alpha.post("/v1/security-groups", {"name": "web", "description": "front",
                                              "rules": [WEB]})
    assert made.status == 201, made.body
    assert made.headers["Location"] == f"/v1/security-groups/{made.body['id']}"
    (rule,) = made.body["rules"]
    assert (rule["protocol"], rule["port_min"], rule["port_max"], rule["cidr"]) == (
        "tcp", 80, 80, "10.0.0.0/8")
    assert alpha.get("/v1/security-groups/web").body == made.body
    assert alpha.get(f"/v1/security-groups/{made.body['id']}").body == made.body
    names = [group["name"] for group in alpha.get("/v1/security-groups").body["security_groups"]]
    assert names == ["default", "web"]
    added = alpha.post("/v1/security-groups/web/rules", {
        "direction": "ingress", "protocol": "udp", "port_min": 5000, "port_max": 5010,
        "group": "web"})
    assert added.status == 200 and len(added.body["rules"]) == 2
    assert added.body["tasks"] == []  # no VM has it: nothing to refresh
    udp = next(rule for rule in added.body["rules"] if rule["protocol"] == "udp")
    assert udp["group"] == "web" and udp["cidr"] is None
    removed = alpha.delete(f"/v1/security-groups/web/rules/{udp['id']}")
    assert removed.status == 200 and [r["id"] for r in removed.body["rules"]] == [rule["id"]]
    replaced = alpha.request("PUT", "/v1/security-groups/web/rules", {"rules": [
        {"direction": "ingress", "protocol": "icmp", "cidr": "192.168.1.7/24"}]})
    assert replaced.status == 200, replaced.body
    assert [(r["protocol"], r["cidr"]) for r in replaced.body["rules"]] == [
        ("icmp", "192.168.1.0/24")]
    assert alpha.post("/v1/security-groups", {"name": "web"}).error_code == "name_conflict"
    assert alpha.delete("/v1/security-groups/web").status == 204
    assert alpha.get("/v1/security-groups/web").error_code == "security_group_not_found"


@pytest.mark.parametrize("rule, field", [
    ({"direction": "ingress", "protocol": "icmp", "port_min": 1, "cidr": "0.0.0.0/0"}, "port_min"),
    ({"direction": "ingress", "protocol": "tcp", "port_max": 80, "cidr": "0.0.0.0/0"}, "port_min"),
    ({"direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80,
      "cidr": "0.0.0.0/0"}, "port_max"),
    ({"direction": "ingress", "protocol": "tcp", "cidr": "10.0.0.300/8"}, "cidr"),
    ({"direction": "ingress", "protocol": "tcp", "cidr": "10.0.0.0/40"}, "cidr"),
    ({"direction": "ingress", "protocol": "tcp", "cidr": "1.2.3.4/32", "group": "default"}, None),
    ({"direction": "egress", "protocol": "tcp", "cidr": "0.0.0.0/0"}, None),
    ({"direction": "ingress", "protocol": "gre", "cidr": "0.0.0.0/0"}, None),
    ({"direction": "ingress", "protocol": "tcp", "cidr": "0.0.0.0/0", "port_min": 0}, None),
    ({"direction": "ingress", "protocol": "tcp"}, None),
])
def test_bad_rules_are_refused_and_change_nothing(alpha: Client, rule: dict[str, Any],
                                                  field: str | None) -> None:
    before = alpha.get("/v1/security-groups").body
    made = alpha.post("/v1/security-groups", {"name": "bad", "rules": [WEB, rule]})
    assert made.status == 400 and made.error_code == "validation_failed", made.body
    if field is not None:
        assert made.body["error"]["details"]["errors"][0]["field"] == f"rules.{field}"
    added = alpha.post("/v1/security-groups/default/rules", rule)
    assert added.status == 400, added.body
    assert alpha.get("/v1/security-groups").body == before


def test_a_rule_from_a_group_needs_that_group(alpha: Client) -> None:
    before = alpha.get("/v1/security-groups").body
    made = alpha.post("/v1/security-groups", {"name": "db", "rules": [
        {"direction": "ingress", "protocol": "tcp", "port_min": 5432, "group": "nowhere"}]})
    assert made.status == 400 and made.error_code == "security_group_not_found"
    assert alpha.get("/v1/security-groups").body == before


def test_another_projects_groups_are_not_there(alpha: Client, beta: Client,
                                               client: Client, base_image: dict) -> None:
    assert alpha.post("/v1/security-groups", {"name": "web", "rules": [WEB]}).status == 201
    assert beta.get("/v1/security-groups/web").error_code == "security_group_not_found"
    assert beta.get("/v1/security-groups?project=team-a").error_code == "project_not_found"
    assert beta.delete("/v1/security-groups/web").status == 404
    assert [g["name"] for g in beta.get("/v1/security-groups").body["security_groups"]] == [
        "default"]
    refused = beta.post("/v1/vms", {"name": "b1", "cpu": 1, "ram": 256, "image_name": "base",
                                    "security_groups": ["web"]})
    assert refused.status == 400 and refused.error_code == "security_group_not_found"
    everyone = {(g["project"], g["name"]) for g in
                client.get("/v1/security-groups").body["security_groups"]}
    assert {("team-a", "web"), ("team-a", "default"), ("team-b", "default")} <= everyone
    assert client.get("/v1/security-groups/web?project=team-a").status == 200


def test_the_count_of_groups_has_a_quota(alpha: Client, client: Client) -> None:
    assert client.request("PUT", "/v1/projects/team-a/quota",
                          {"security_groups": 2}).status == 200
    assert alpha.post("/v1/security-groups", {"name": "one"}).status == 201  # default + one
    over = alpha.post("/v1/security-groups", {"name": "two"})
    assert over.status == 403 and over.error_code == "quota_exceeded"
    assert over.body["error"]["details"]["resource"] == "security_groups"
    usage = alpha.get("/v1/projects/team-a/quota").body
    assert usage["in_use"]["security_groups"] == 2


def test_a_vm_gets_the_default_group_and_its_nic_names_its_filter(
        alpha: Client, app: App, base_image: dict) -> None:
    vm = create_vm(alpha, "a1")
    assert vm["security_groups"] == ["default"]
    interface = ET.fromstring(app.hypervisor.domain_xml(vm["id"])).find("devices/interface")
    ref = interface.find("filterref")
    assert ref is not None and ref.get("filter") == filter_name(vm["id"])
    assert {p.get("name"): p.get("value") for p in ref.iter("parameter")} == {
        "CTRL_IP_LEARNING": "dhcp"}
    default = alpha.get("/v1/security-groups/default").body
    assert default["vms"] == [vm["id"]]
    xml = rendered(app, vm["id"])
    root = ET.fromstring(xml)
    assert root.get("name") == filter_name(vm["id"]) and root.findtext("uuid") == vm["id"]
    assert root.find("filterref").get("filter") == "clean-traffic"
    assert accepts(xml) == [{"protocol": "tcp", "dstportstart": "22", "dstportend": "22"}]
    golden = GOLDEN.read_text().replace("VM_ID", vm["id"])
    assert xml.strip() == golden.strip()
    busy = alpha.delete("/v1/security-groups/default")
    assert busy.status == 409 and busy.error_code == "security_group_in_use"


def test_group_rules_expand_to_the_members_addresses(alpha: Client, app: App,
                                                     base_image: dict) -> None:
    first, second = create_vm(alpha, "a1"), create_vm(alpha, "a2")
    with app.db.write() as conn:
        vm_dao.set_addresses(conn, second["id"], [
            {"address": "192.168.77.12", "family": "ipv4", "source": "dhcp"}], utc_now())
    assert {"protocol": "all", "srcipaddr": "192.168.77.12", "srcipmask": "32"} in accepts(
        rendered(app, first["id"]))


def test_groups_attach_and_detach_on_a_vm(alpha: Client, app: App, base_image: dict) -> None:
    assert alpha.post("/v1/security-groups", {"name": "web", "rules": [WEB]}).status == 201
    vm = create_vm(alpha, "a1", security_groups=[])
    assert vm["security_groups"] == [] and accepts(rendered(app, vm["id"])) == []
    attached = alpha.post(f"/v1/vms/{vm['id']}/security-groups", {"name": "web"})
    assert attached.status == 202 and attached.body["action"] == "firewall", attached.body
    assert alpha.wait_task(attached.body["id"])["status"] == "succeeded"
    assert alpha.get("/v1/vms/a1").body["security_groups"] == ["web"]
    assert accepts(rendered(app, vm["id"])) == [
        {"protocol": "tcp", "srcipaddr": "10.0.0.0", "srcipmask": "8",
         "dstportstart": "80", "dstportend": "80"}]
    changed = alpha.post("/v1/security-groups/web/rules", {
        "direction": "ingress", "protocol": "tcp", "port_min": 443, "cidr": "0.0.0.0/0"})
    (task,) = changed.body["tasks"]
    assert task["action"] == "firewall" and task["vm_id"] == vm["id"]
    assert alpha.wait_task(task["id"])["status"] == "succeeded"
    assert len(accepts(rendered(app, vm["id"]))) == 2
    missing = alpha.post(f"/v1/vms/{vm['id']}/security-groups", {"name": "nope"})
    assert missing.status == 400 and missing.error_code == "security_group_not_found"
    detached = alpha.delete(f"/v1/vms/{vm['id']}/security-groups/web")
    assert detached.status == 202
    assert alpha.wait_task(detached.body["id"])["status"] == "succeeded"
    assert alpha.get("/v1/vms/a1").body["security_groups"] == []
    again = alpha.delete(f"/v1/vms/{vm['id']}/security-groups/web")
    assert again.status == 404 and again.error_code == "security_group_not_attached"


def test_a_vm_with_an_unknown_group_is_not_made(alpha: Client, base_image: dict) -> None:
    refused = alpha.post("/v1/vms", {"name": "a1", "cpu": 1, "ram": 256, "image_name": "base",
                                     "security_groups": ["default", "nope"]})
    assert refused.status == 400 and refused.error_code == "security_group_not_found"
    assert alpha.get("/v1/vms").body["vms"] == []
    assert alpha.get("/v1/projects/team-a/quota").body["in_use"]["instances"] == 0


def test_a_deleted_member_leaves_the_filters_that_named_it(alpha: Client, app: App,
                                                          base_image: dict) -> None:
    """Background changes take no task (no VM becomes busy): the VMs whose filters named a
    member are marked, and the housekeeping pass rewrites them."""
    first, second = create_vm(alpha, "a1"), create_vm(alpha, "a2")
    with app.db.write() as conn:
        group_dao.take_pending(conn, first["id"])
    deleted = alpha.delete(f"/v1/vms/{second['id']}")
    assert alpha.wait_task(deleted.body["id"])["status"] == "succeeded"
    with app.db.read() as conn:
        assert first["id"] in group_dao.pending(conn)
        assert task_dao.active_for_vm(conn, first["id"]) is None  # a1 is not busy
    assert settle(Firewall(app.db), app.db, app.hosts) >= 1
    with app.db.read() as conn:
        assert group_dao.pending(conn) == []


def test_a_refresh_a_restart_cut_short_is_left_to_housekeeping(
        make_app: AppFactory, config: Config, alpha: Client, app: App,
        base_image: dict) -> None:
    vm_id = create_vm(alpha, "cut")["id"]
    with app.db.write() as conn:  # as if the server died while the VM's refresh ran
        group_dao.take_pending(conn, vm_id)
        conn.execute("INSERT INTO tasks (id, vm_id, action, status, created_at) VALUES "
                     "('00000000-0000-4000-8000-00000000000f', ?, 'firewall', 'running', "
                     "'2026-01-01')", (vm_id,))
    app.close()
    again = make_app(config)
    task = Client(again).get("/v1/tasks/00000000-0000-4000-8000-00000000000f").body
    assert task["status"] == "failed" and task["error"]["code"] == "interrupted"
    with again.db.read() as conn:
        assert group_dao.pending(conn) == [vm_id]


def test_a_refresh_that_waited_for_a_delete_never_defines_the_filter_again(
        alpha: Client, app: App, base_image: dict) -> None:
    """A housekeeping refresh and a delete's remove meet at the VM's lock: the refresh reads
    the row only once it holds it, so it sees `deleting` and leaves the filter removed."""
    vm_id = create_vm(alpha, "going")["id"]
    calls: list[int] = []

    def refresh(firewall: Firewall) -> None:  # a fresh Firewall asks libvirt (no driver cache)
        before = app.hypervisor.thread_calls
        firewall.refresh([vm_id], app.hosts)
        calls.append(app.hypervisor.thread_calls - before)

    refresh(Firewall(app.db))
    assert calls[0] > 0  # a refresh of a running VM asks libvirt for its filter
    waiting = Firewall(app.db)
    with waiting._lock(vm_id):  # held, as a delete's remove holds it
        thread = threading.Thread(target=refresh, args=(waiting,))
        thread.start()
        time.sleep(0.2)  # (lets the old code read the row first; the new one cannot)
        with app.db.write() as conn:
            vm_dao.set_status(conn, vm_id, "deleting", utc_now())
    thread.join(timeout=30)
    assert calls[1:] == [0]
