"""Security groups on real guests: on an isolated network of its own, guest B fetches guest A's
web page; A's group loses its port 80 rule while both run and B's fetches fail; libvirt holds
A's filter with clean-traffic and the rule. Everything made here goes at the end (domains,
the network, the nwfilters)."""
from __future__ import annotations

import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import (
    SYSTEM_URI,
    IsolatedNetwork,
    purge_domains,
    purge_filters,
    remove_network,
    start_isolated_network,
)
from src.config import Config
from src.hypervisor.nwfilter_xml import filter_name
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served, vm_ids_of
from tests.e2e.http_client import HttpClient
from tests.e2e.test_boot import wait_for_console

DEADLINE_S = 180
LEASE = r"IAAS-DHCP-LEASE (\d+\.\d+\.\d+\.\d+)"


def created(client: HttpClient, name: str, **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 128,
                                    "image_name": "tiny-linux", **extra})
    assert reply.status == 202, reply.body
    task = client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "succeeded", task
    return dict(reply.body)


def finished(client: HttpClient, task: dict[str, Any]) -> None:
    assert client.wait_task(task["id"])["status"] == "succeeded"


def held_filter(vm_id: str) -> ET.Element:
    """The filter as libvirt holds it (`virsh nwfilter-dumpxml`)."""
    dumped = subprocess.run(["virsh", "-c", SYSTEM_URI, "nwfilter-dumpxml", filter_name(vm_id)],
                            capture_output=True, text=True, check=True).stdout
    return ET.fromstring(dumped)


def wait_for_source(client: HttpClient, a: dict[str, Any], b: dict[str, Any], address: str,
                    present: bool) -> None:
    """Until A's filter as libvirt holds it lets B's address in (present) or no longer does: a
    housekeeping pass rewrites it after B's address or membership changed."""
    deadline = time.monotonic() + 60
    while True:
        held = held_filter(a["id"])
        sources = {all_.get("srcipaddr") for all_ in held.iterfind("rule/all")}
        if (address in sources) == present:
            return
        b_now = client.get(f"/v1/vms/{b['id']}").body
        assert time.monotonic() < deadline, (ET.tostring(held, encoding="unicode"),
                                             b_now.get("ip_addresses"), b_now.get("status"))
        time.sleep(0.5)


def ports_let_in(root: ET.Element) -> set[str]:
    return {tcp.get("dstportstart", "") for tcp in root.iterfind("rule/tcp")}


def occurrences(log: Path, line: str) -> int:
    return (log.read_text(errors="replace") if log.exists() else "").count(line)


@dataclass
class Lab:
    client: HttpClient
    config: Config
    net: IsolatedNetwork


@pytest.fixture
def lab(make_e2e_app: E2eAppFactory, tmp_path: Path, workspace: Path,
        system_conn: libvirt.virConnect) -> Iterator[Lab]:
    """An app on an isolated network of its own (sweeping every 2 s, so addresses are learnt
    soon), removed with its domains and nwfilters at the end."""
    net = start_isolated_network(system_conn, "iaas-e2e-sg")
    config = Config(db_path=tmp_path / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                    images_dir=workspace / "images", instances_dir=workspace / "instances",
                    network=net.name, max_builds=2, reconcile_interval_s=2.0)
    app = make_e2e_app(config)
    try:
        with served(app) as client:
            register_tiny_image(client)
            yield Lab(client, config, net)
    finally:
        app.close()
        purge_domains(system_conn, vm_ids_of(app), app.installation_id)
        purge_filters(system_conn, vm_ids_of(app))
        remove_network(system_conn, net)


def console_of(lab: Lab, vm: dict[str, Any]) -> Path:
    return lab.config.instances_dir / vm["id"] / "console.log"


def test_a_rule_change_reaches_running_guests(lab: Lab,
                                              system_conn: libvirt.virConnect) -> None:
    client, net = lab.client, lab.net
    web = client.post("/v1/security-groups", {"name": "web", "rules": [
        {"direction": "ingress", "protocol": "tcp", "port_min": 22, "cidr": "0.0.0.0/0"},
        {"direction": "ingress", "protocol": "tcp", "port_min": 80, "cidr": str(net.subnet)}]})
    assert web.status == 201, web.body
    a = created(client, "web-a", security_groups=["web"])
    a_log = console_of(lab, a)
    deadline = time.monotonic() + DEADLINE_S
    address = wait_for_console(a_log, LEASE, deadline).group(1)
    wait_for_console(a_log, "IAAS-HTTPD-UP", deadline)
    held = held_filter(a["id"])
    assert held.find("filterref").get("filter") == "clean-traffic"
    assert ports_let_in(held) == {"22", "80"}
    nic = ET.fromstring(system_conn.lookupByUUIDString(a["id"]).XMLDesc(0)).find(
        "devices/interface/filterref")
    assert nic is not None and nic.get("filter") == filter_name(a["id"])

    url = f"http://{address}:80/"
    b = created(client, "probe-b", security_groups=[],  # nothing in: its replies pass
                user_data=f"#cloud-config\niaas_probe_url: {url}\n")
    b_log = console_of(lab, b)
    wait_for_console(b_log, re.escape(f"IAAS-PROBE-OK {url}"), time.monotonic() + DEADLINE_S)

    rule = next(r for r in web.body["rules"] if r["port_min"] == 80)
    changed = client.delete(f"/v1/security-groups/web/rules/{rule['id']}")
    assert changed.status == 200, changed.body
    (task,) = changed.body["tasks"]
    assert task["vm_id"] == a["id"]
    finished(client, task)
    assert ports_let_in(held_filter(a["id"])) == {"22"}
    wait_for_console(b_log, re.escape(f"IAAS-PROBE-FAIL {url}"), time.monotonic() + DEADLINE_S)

    again = client.post("/v1/security-groups/web/rules", {
        "direction": "ingress", "protocol": "tcp", "port_min": 80, "cidr": str(net.subnet)})
    finished(client, again.body["tasks"][0])
    deadline = time.monotonic() + DEADLINE_S
    while occurrences(b_log, f"IAAS-PROBE-OK {url}") < 2:
        assert time.monotonic() < deadline, b_log.read_text(errors="replace")[-2000:]
        time.sleep(0.5)

    for vm in (a, b):
        deleted = client.delete(f"/v1/vms/{vm['id']}")
        assert deleted.status == 202
        finished(client, deleted.body)
    for vm in (a, b):  # each filter went with its VM
        try:
            system_conn.nwfilterLookupByName(filter_name(vm["id"]))
            raise AssertionError(f"{filter_name(vm['id'])} is still defined")
        except libvirt.libvirtError as exc:
            assert exc.get_error_code() == libvirt.VIR_ERR_NO_NWFILTER


def test_the_default_group_lets_its_members_in_by_their_addresses(lab: Lab) -> None:
    """`default` lets in everything from its members: A's filter gets B's address once it is
    learnt, and loses it when B leaves the group."""
    client = lab.client
    a = created(client, "member-a")  # default
    a_log = console_of(lab, a)
    deadline = time.monotonic() + DEADLINE_S
    address = wait_for_console(a_log, LEASE, deadline).group(1)
    wait_for_console(a_log, "IAAS-HTTPD-UP", deadline)
    url = f"http://{address}:80/"
    b = created(client, "member-b", user_data=f"#cloud-config\niaas_probe_url: {url}\n")
    b_log = console_of(lab, b)
    b_address = wait_for_console(b_log, LEASE, time.monotonic() + DEADLINE_S).group(1)
    wait_for_console(b_log, re.escape(f"IAAS-PROBE-OK {url}"), time.monotonic() + DEADLINE_S)
    wait_for_source(client, a, b, b_address, present=True)

    left = client.delete(f"/v1/vms/{b['id']}/security-groups/default")
    assert left.status == 202, left.body
    finished(client, left.body)
    wait_for_console(b_log, re.escape(f"IAAS-PROBE-FAIL {url}"), time.monotonic() + DEADLINE_S)
    wait_for_source(client, a, b, b_address, present=False)
