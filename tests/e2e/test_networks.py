"""A real guest with two NICs on two isolated networks the test defines through the API (no
<forward>): the definition libvirt holds has both interfaces, the guest's eth0 gets a DHCP
lease on the first network and the API shows it on that NIC; a network in use is not deleted;
everything is removed at the end."""
from __future__ import annotations

import ipaddress
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import (
    TINY_IMAGE_NAME,
    IsolatedNetwork,
    domain_exists,
    free_subnet,
    remove_network,
)
from src.config import Config
from tests.e2e.conftest import register_tiny_image
from tests.e2e.http_client import HttpClient
from tests.e2e.test_boot import BOOT_DEADLINE_S, LEASE, wait_for_console


@pytest.fixture
def two_networks(live_client: HttpClient,
                 system_conn: libvirt.virConnect) -> Iterator[list[IsolatedNetwork]]:
    """Two isolated networks defined through POST /v1/networks (each on a /24 no route of
    this machine uses), removed afterwards whatever happened."""
    made: list[IsolatedNetwork] = []
    try:
        for index in (1, 2):
            subnet = free_subnet()  # after the first exists, its route keeps the second apart
            name = f"iaas-e2e-nic{index}-{secrets.token_hex(3)}"
            reply = live_client.post("/v1/networks", {"name": name, "host": "local",
                                                      "mode": "isolated", "subnet": str(subnet)})
            assert reply.status == 201, reply.body
            made.append(IsolatedNetwork(name, str(reply.body["bridge"]), subnet))
        yield made
    finally:
        for net in made:  # the API's own delete ran in the test; this only catches failures
            remove_network(system_conn, net)


def test_a_guest_with_two_nics_gets_its_lease_on_the_first(
        live_client: HttpClient, e2e_config: Config, system_conn: libvirt.virConnect,
        two_networks: list[IsolatedNetwork]) -> None:
    first, second = two_networks
    for net in two_networks:  # isolated: libvirt holds them without <forward>
        xml = ET.fromstring(system_conn.networkLookupByName(net.name).XMLDesc(0))
        assert xml.find("forward") is None and xml.find("ip/dhcp/range") is not None
    listed = {entry["name"]: entry for entry in live_client.get("/v1/networks").body["networks"]}
    assert (listed[first.name]["mode"], listed[first.name]["subnet"],
            listed[first.name]["active"]) == ("isolated", str(first.subnet), True)
    register_tiny_image(live_client)
    reply = live_client.post("/v1/vms", {"name": f"e2e-nics-{secrets.token_hex(3)}", "cpu": 1,
                                         "ram": 256, "image_name": TINY_IMAGE_NAME,
                                         "networks": [first.name, second.name]})
    assert reply.status == 202, reply.body
    vm_id = reply.body["id"]
    task = live_client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "succeeded", task["error"]
    nics = live_client.get(f"/v1/vms/{vm_id}").body["nics"]
    assert [nic["network"] for nic in nics] == [first.name, second.name]

    root = ET.fromstring(system_conn.lookupByUUIDString(vm_id).XMLDesc(0))
    held = [(i.find("source").get("network"), i.find("mac").get("address"))  # type: ignore[union-attr]
            for i in root.iterfind("./devices/interface")]
    assert held == [(nic["network"], nic["mac"]) for nic in nics]

    deadline = time.monotonic() + BOOT_DEADLINE_S
    lease = wait_for_console(e2e_config.instances_dir / vm_id / "console.log", LEASE.pattern,
                             deadline)
    assert ipaddress.ip_address(lease.group(1)) in first.subnet
    while not (shown := live_client.get(f"/v1/vms/{vm_id}").body)["nics"][0]["addresses"]:
        assert time.monotonic() < deadline, "the lease never reached the first NIC"
        time.sleep(0.5)
    assert shown["nics"][0]["addresses"] == [{"address": lease.group(1), "family": "ipv4",
                                              "source": "dhcp"}]
    assert shown["nics"][1]["addresses"] == []  # the tiny guest only asks DHCP on eth0
    assert shown["ip_addresses"] == shown["nics"][0]["addresses"]

    in_use = live_client.delete(f"/v1/networks/local/{first.name}")
    assert (in_use.status, in_use.error_code) == (409, "network_in_use")
    assert system_conn.networkLookupByName(first.name).isActive()

    reply = live_client.delete(f"/v1/vms/{vm_id}")
    assert live_client.wait_task(reply.body["id"])["status"] == "succeeded"
    assert not domain_exists(system_conn, vm_id)
    for net in two_networks:
        assert live_client.delete(f"/v1/networks/local/{net.name}").status == 204
        with pytest.raises(libvirt.libvirtError):
            system_conn.networkLookupByName(net.name)


def _lan_subnet() -> str:
    """The subnet of the route of this machine's default interface (a route no libvirt network
    owns), which libvirt refuses to start a network on."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    device = next(line.split()[line.split().index("dev") + 1] for line in routes
                  if line.startswith("default ") and " dev " in line)
    return next(line.split()[0] for line in routes
                if f" dev {device} " in f"{line} " and "/" in line.split()[0])


def test_a_network_libvirt_will_not_start_leaves_nothing_behind(
        live_client: HttpClient, system_conn: libvirt.virConnect) -> None:
    name = f"iaas-e2e-clash-{secrets.token_hex(3)}"
    subnet = str(ipaddress.ip_network(_lan_subnet()))
    try:
        reply = live_client.post("/v1/networks", {"name": name, "host": "local",
                                                  "mode": "isolated", "subnet": subnet})
        assert (reply.status, reply.error_code) == (409, "network_define_failed"), reply.body
        assert "in use" in reply.body["error"]["message"]  # libvirt's words: the route's device
        assert name not in [net.name() for net in system_conn.listAllNetworks(0)]
        listed = live_client.get("/v1/networks").body["networks"]
        assert name not in [entry["name"] for entry in listed]
    finally:
        remove_network(system_conn, IsolatedNetwork(name, "", ipaddress.IPv4Network(subnet)))
