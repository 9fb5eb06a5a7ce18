"""Networks on libvirt's test driver: listing each host's networks, defining and removing
them through the API (bad input and clashes change nothing), VMs with several NICs (the
definition libvirt holds has one interface per network, in order), and the scheduler skipping
hosts that lack a network."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.conftest import make_qcow2
from tests.support import Client, host_xml

LAB = {"name": "lab", "host": "local", "mode": "isolated", "subnet": "10.251.0.0/24"}
VM = {"cpu": 1, "ram": 256, "image_name": "base"}


@pytest.fixture
def admin(app: App, config: Config) -> Client:
    client = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201
    return client


def networks(client: Client) -> dict[tuple[str | None, str], dict[str, Any]]:
    reply = client.get("/v1/networks")
    assert reply.status == 200, reply.body
    return {(entry["host"], entry["name"]): entry for entry in reply.body["networks"]}


def libvirt_networks(app: App, host: str = "local") -> set[str]:
    return {facts.name for facts in app.hosts.get(host).hypervisor.networks.list_all()}


def test_a_host_s_own_network_is_listed_and_cannot_be_deleted(admin: Client) -> None:
    found = networks(admin)
    assert found[("local", "iaas-test")] == {
        "name": "iaas-test", "host": "local", "mode": "isolated", "subnet": "10.250.0.0/24",
        "bridge": "virbr-iaas-t", "active": True, "managed": False}
    refused = admin.delete("/v1/networks/local/iaas-test")
    assert (refused.status, refused.error_code) == (409, "network_not_managed")
    assert admin.delete("/v1/networks/local/nothing").error_code == "network_not_found"
    assert admin.delete("/v1/networks/elsewhere/lab").error_code == "host_not_found"


def test_a_network_is_defined_started_listed_and_deleted(app: App, admin: Client) -> None:
    made = admin.post("/v1/networks", LAB)
    assert made.status == 201, made.body
    assert made.headers["Location"] == "/v1/networks/local/lab"
    assert made.body == {**LAB, "bridge": None, "active": True, "managed": True}
    shown = networks(admin)[("local", "lab")]
    assert (shown["mode"], shown["subnet"], shown["active"], shown["managed"]) == (
        "isolated", "10.251.0.0/24", True, True)
    xml = ET.fromstring(app.hosts.get("local").hypervisor.connection.call(
        lambda conn: conn.networkLookupByName("lab").XMLDesc(0)))
    assert xml.find("forward") is None  # isolated: nothing leaves the host
    ip = xml.find("ip")
    assert ip is not None and (ip.get("address"), ip.get("netmask")) == ("10.251.0.1",
                                                                         "255.255.255.0")
    dhcp = xml.find("ip/dhcp/range")
    assert dhcp is not None and (dhcp.get("start"), dhcp.get("end")) == ("10.251.0.2",
                                                                         "10.251.0.254")
    assert admin.delete("/v1/networks/local/lab").status == 204
    assert "lab" not in libvirt_networks(app) and ("local", "lab") not in networks(admin)


def test_a_bridge_network_attaches_to_the_host_bridge(app: App, admin: Client) -> None:
    made = admin.post("/v1/networks", {"name": "lan", "host": "local", "mode": "bridge",
                                       "bridge": "br0"})
    assert made.status == 201, made.body
    xml = ET.fromstring(app.hosts.get("local").hypervisor.connection.call(
        lambda conn: conn.networkLookupByName("lan").XMLDesc(0)))
    forward, bridge = xml.find("forward"), xml.find("bridge")
    assert forward is not None and forward.get("mode") == "bridge"
    assert bridge is not None and bridge.get("name") == "br0"
    assert networks(admin)[("local", "lan")]["mode"] == "bridge"
    assert admin.delete("/v1/networks/local/lan").status == 204


@pytest.mark.parametrize(("body", "status", "code"), [
    ({**LAB, "mode": "bridge"}, 400, "network_invalid"),  # a bridge network takes no subnet
    ({"name": "lab", "host": "local", "mode": "bridge"}, 400, "network_invalid"),
    ({"name": "lab", "host": "local", "mode": "isolated"}, 400, "network_invalid"),
    ({**LAB, "subnet": "10.251.0.1/24"}, 400, "network_invalid"),  # host bits set
    ({**LAB, "subnet": "10.251.0.0/31"}, 400, "network_invalid"),
    ({**LAB, "subnet": "999.1.1.0/24"}, 400, "network_invalid"),
    ({**LAB, "mode": "route"}, 400, "validation_failed"),
    ({**LAB, "name": "lab'/><x"}, 400, "validation_failed"),
    ({**LAB, "bridge": "br0'/>"}, 400, "validation_failed"),
    ({**LAB, "extra": 1}, 400, "validation_failed"),
    ({**LAB, "host": "nowhere"}, 400, "host_not_found"),
    ({**LAB, "name": "iaas-test"}, 409, "name_conflict"),
    ({**LAB, "subnet": "10.250.0.0/16"}, 409, "network_subnet_conflict"),
])
def test_bad_input_is_refused_and_changes_nothing(app: App, admin: Client, body: dict[str, Any],
                                                  status: int, code: str) -> None:
    before = libvirt_networks(app)
    reply = admin.post("/v1/networks", body)
    assert (reply.status, reply.error_code) == (status, code), reply.body
    assert libvirt_networks(app) == before and networks(admin).keys() == {("local", "iaas-test")}


def test_members_see_names_only_and_may_not_define(app: App, admin: Client) -> None:
    assert admin.post("/v1/networks", LAB).status == 201
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    listed = member.get("/v1/networks").body["networks"]
    assert sorted(entry["name"] for entry in listed) == ["iaas-test", "lab"]
    assert all(entry["host"] is None for entry in listed)
    assert member.post("/v1/networks", {**LAB, "name": "mine"}).status == 403
    assert member.delete("/v1/networks/local/lab").status == 403
    assert "mine" not in libvirt_networks(app)


def interfaces(app: App, vm_id: str, host: str = "local") -> list[tuple[str, str]]:
    """(network, mac) of each interface in the definition libvirt holds, in order."""
    xml = app.hosts.get(host).hypervisor.connection.call(
        lambda conn: conn.lookupByUUIDString(vm_id).XMLDesc(0))
    return [(str(i.find("source").get("network")), str(i.find("mac").get("address")))  # type: ignore[union-attr]
            for i in ET.fromstring(xml).iterfind("./devices/interface")]


def built(client: Client, name: str, **fields: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, **VM, **fields})
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    body: dict[str, Any] = client.get(f"/v1/vms/{reply.body['id']}").body
    return body


def test_a_vm_with_two_networks_has_two_interfaces_in_order(app: App, admin: Client) -> None:
    assert admin.post("/v1/networks", LAB).status == 201
    vm = built(admin, "two-nics", networks=["lab", "iaas-test"])
    assert [nic["network"] for nic in vm["nics"]] == ["lab", "iaas-test"]
    macs = [nic["mac"] for nic in vm["nics"]]
    assert len(set(macs)) == 2
    # The test driver's guest agent answers for every NIC, each from its network's subnet.
    assert [[entry["address"].rsplit(".", 1)[0] for entry in nic["addresses"]]
            for nic in vm["nics"]] == [["10.251.0"], ["10.250.0"]]
    assert vm["ip_addresses"] == vm["nics"][0]["addresses"] + vm["nics"][1]["addresses"]
    assert interfaces(app, vm["id"]) == [("lab", macs[0]), ("iaas-test", macs[1])]
    in_use = admin.delete("/v1/networks/local/lab")
    assert (in_use.status, in_use.error_code) == (409, "network_in_use")
    assert in_use.body["error"]["details"]["vms"] == [vm["id"]]
    assert "lab" in libvirt_networks(app)
    assert admin.wait_task(admin.delete(f"/v1/vms/{vm['id']}").body["id"])["status"] == "succeeded"
    assert admin.delete("/v1/networks/local/lab").status == 204


def test_a_vm_without_networks_joins_its_host_s_network(app: App, admin: Client) -> None:
    vm = built(admin, "plain")
    assert [(nic["network"], nic["addresses"]) for nic in vm["nics"]] == [
        ("iaas-test", vm["ip_addresses"])]
    assert interfaces(app, vm["id"]) == [("iaas-test", vm["nics"][0]["mac"])]
    assert admin.get("/v1/vms").body["vms"][0]["nics"] == vm["nics"]


@pytest.mark.parametrize(("networks", "status", "code"), [
    (["iaas-test", "iaas-test"], 400, "validation_failed"),  # one NIC per network
    (["nowhere"], 400, "network_not_found"),
    (["iaas-test", "nowhere"], 400, "network_not_found"),
    ([], 400, "validation_failed"),
    (["x'/><interface"], 400, "validation_failed"),
])
def test_unknown_or_repeated_networks_are_refused_and_change_nothing(
        app: App, admin: Client, networks: list[str], status: int, code: str) -> None:
    reply = admin.post("/v1/vms", {"name": "refused", **VM, "networks": networks})
    assert (reply.status, reply.error_code) == (status, code), reply.body
    assert admin.get("/v1/vms").body["vms"] == []
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM vm_nics").fetchone()[0] == 0


def test_the_scheduler_only_picks_hosts_offering_every_network(
        app: App, admin: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.xml"  # more free RAM: spread would pick it for anything
    big.write_text(host_xml("iaas-test", cpus=16, memory_gib=64))
    assert admin.post("/v1/hosts", {"name": "big", "uri": f"test://{big}"}).status == 201
    assert admin.post("/v1/networks", LAB).status == 201  # on local only
    assert built(admin, "anywhere")["host"] == "big"
    on_lab = built(admin, "on-lab", networks=["iaas-test", "lab"])
    assert on_lab["host"] == "local"
    assert [nic["network"] for nic in on_lab["nics"]] == ["iaas-test", "lab"]
    pinned = admin.post("/v1/vms", {"name": "pinned", **VM, "networks": ["lab"],
                                    "host": "big"})
    assert (pinned.status, pinned.error_code) == (409, "network_unavailable"), pinned.body
    assert "lab" in pinned.body["error"]["message"]
    assert {vm["name"] for vm in admin.get("/v1/vms").body["vms"]} == {"anywhere", "on-lab"}


def test_a_move_needs_the_vm_s_networks_on_the_target_and_keeps_them(
        app: App, admin: Client, tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text(host_xml("iaas-test"))
    assert admin.post("/v1/hosts", {"name": "other", "uri": f"test://{other}"}).status == 201
    assert admin.post("/v1/networks", LAB).status == 201  # on local only
    vm = built(admin, "mover", networks=["iaas-test", "lab"], host="local")
    refused = admin.post(f"/v1/vms/{vm['id']}/migrate", {"live": False, "host": "other"})
    assert (refused.status, refused.error_code) == (409, "vm_not_migratable"), refused.body
    assert "lacks the network(s) lab" in refused.body["error"]["message"]
    with app.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM vm_migrations").fetchone()[0] == 0
    assert admin.post("/v1/networks", {**LAB, "host": "other"}).status == 201
    moved = admin.post(f"/v1/vms/{vm['id']}/migrate", {"live": False, "host": "other"})
    assert moved.status == 202, moved.body
    assert admin.wait_task(moved.body["id"])["status"] == "succeeded"
    shown = admin.get(f"/v1/vms/{vm['id']}").body
    assert shown["host"] == "other"
    assert [(nic["network"], nic["mac"]) for nic in shown["nics"]] == [
        (nic["network"], nic["mac"]) for nic in vm["nics"]]
    assert interfaces(app, vm["id"], "other") == [
        (nic["network"], nic["mac"]) for nic in vm["nics"]]
    assert admin.delete("/v1/networks/other/lab").error_code == "network_in_use"
    assert admin.delete("/v1/networks/local/lab").status == 204  # nothing uses it there now


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "queued-before-025"])
def test_a_queued_vm_waits_for_a_host_with_its_networks(
        app: App, admin: Client, tmp_path: Path, recorded: bool) -> None:
    big = tmp_path / "big.xml"
    big.write_text(host_xml("iaas-test", cpus=16, memory_gib=64))
    assert admin.post("/v1/hosts", {"name": "big", "uri": f"test://{big}"}).status == 201
    assert admin.post("/v1/networks", LAB).status == 201  # on local only
    filler = built(admin, "filler", ram=64512, host="local")  # local has 1 GiB left
    reply = admin.post("/v1/vms", {"name": "waits", **VM, "ram": 4096, "networks": ["lab"],
                                   "wait_for_capacity": True})
    assert reply.status == 202, reply.body
    assert (reply.body["status"], reply.body["host"]) == ("queued", None)  # big has no lab
    assert reply.body["nics"] == []
    with app.db.write() as conn:  # the networks asked for are kept with the wait
        assert conn.execute("SELECT networks FROM capacity_waits WHERE vm_id = ?",
                            (reply.body["id"],)).fetchone()[0] == '["lab"]'
        if not recorded:  # as a VM queued before migration 025: the pass reads its task
            conn.execute("UPDATE capacity_waits SET networks = NULL")
    done = admin.delete(f"/v1/vms/{filler['id']}")
    assert admin.wait_task(done.body["id"])["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while (shown := admin.get(f"/v1/vms/{reply.body['id']}").body)["status"] != "running":
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    assert shown["host"] == "local"
    assert [nic["network"] for nic in shown["nics"]] == ["lab"]
    assert interfaces(app, shown["id"]) == [("lab", shown["nics"][0]["mac"])]
