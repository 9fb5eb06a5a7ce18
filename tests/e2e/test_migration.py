"""Live migration of a real guest from qemu:///system to a second libvirtd over qemu+tls (its own
netns, UTS namespace and storage pool), both TCG: the guest's uptime and console go on, the
source keeps nothing; a copy that outlives IAAS_MIGRATION_TIMEOUT is aborted and changes
nothing."""
from __future__ import annotations

import os
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.console import ask, uptime_s
from scripts.harness.host import (
    IsolatedNetwork,
    domain_exists,
    purge_domains,
    remove_network,
    start_isolated_network,
)
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost
from src.app import App
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.http_client import HttpClient
from tests.e2e.test_resilience import ApiProcess, _installation_id
from tests.e2e.test_volumes import done
from tests.e2e.test_volumes_remote import console_has

POOL = "iaas-e2e-mig"
READY = "IAAS-TINY-READY"


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {seconds} s"
        time.sleep(0.5)


@pytest.fixture
def remote_network(remote_conn: libvirt.virConnect) -> Iterator[IsolatedNetwork]:
    net = start_isolated_network(remote_conn, "iaas-e2e-mn")
    yield net
    remove_network(remote_conn, net)


@pytest.fixture
def two_hosts(make_e2e_app: E2eAppFactory, remote_host: RemoteHost,
              remote_network: IsolatedNetwork) -> Iterator[Callable[[Config], App]]:
    """Apps with the host `remote` (pool storage) beside `local`; the remote's domains and
    pool of theirs are removed at the end."""
    apps: list[App] = []

    def factory(config: Config) -> App:
        app = make_e2e_app(config)
        apps.append(app)
        return app

    yield factory
    fresh = remote_host.open()
    try:
        for app in apps:
            purge_domains(fresh, [], app.installation_id)
        remove_pool(fresh, POOL)
    finally:
        fresh.close()


def add_remote(client: HttpClient, remote: RemoteHost, net: IsolatedNetwork) -> None:
    added = client.post("/v1/hosts", {"name": "remote", "uri": remote.uri, "storage": "pool",
                                      "storage_pool": POOL, "network": net.name,
                                      "domain_type": "qemu"})
    assert added.status == 201, added.body


def booted(client: HttpClient) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": f"mig-{secrets.token_hex(4)}", "cpu": 1,
                                    "ram": 128, "image_name": "tiny-linux", "host": "local"})
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    vm_id = reply.body["id"]
    eventually(lambda: READY in client.get(f"/v1/vms/{vm_id}/console?tail=80").body, 180,
               "the guest's boot")
    return dict(reply.body)


def pool_files_of(remote: RemoteHost, vm_id: str) -> list[str]:
    conn = remote.open()
    try:
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh(0)
        return [name for name in pool.listVolumes() if vm_id in name]
    finally:
        conn.close()


def test_a_running_guest_moves_live_and_goes_on(
        two_hosts: Callable[[Config], App], e2e_config: Config, remote_host: RemoteHost,
        remote_conn: libvirt.virConnect, remote_network: IsolatedNetwork,
        system_conn: libvirt.virConnect) -> None:
    app = two_hosts(e2e_config)
    with served(app) as client:
        register_tiny_image(client)
        add_remote(client, remote_host, remote_network)
        vm = booted(client)
        before, asked = uptime_s(system_conn, vm["id"]), time.monotonic()
        reply = client.post(f"/v1/vms/{vm['id']}/migrate", {"host": "remote"})
        assert reply.status == 202 and reply.body["action"] == "migrate", reply.body
        task = client.wait_task(reply.body["id"])
        took = time.monotonic() - asked
        assert task["status"] == "succeeded", task
        assert task["progress"]["phase"] == "done" and task["progress"]["downtime_ms"] >= 0
        shown = client.get(f"/v1/vms/{vm['id']}").body
        assert (shown["host"], shown["status"], shown["power_state"]) == (
            "remote", "running", "running")
        assert not domain_exists(system_conn, vm["id"])  # the source keeps nothing
        assert not (e2e_config.instances_dir / vm["id"]).exists()
        after = uptime_s(remote_conn, vm["id"])
        print(f"\nlive migration: {took:.1f} s from the request to the task's end, guest "
              f"uptime {before:.1f} s -> {after:.1f} s, downtime "
              f"{task['progress']['downtime_ms']} ms")
        assert after >= before + (time.monotonic() - asked) - 2  # never rebooted
        eventually(lambda: "IAAS-UPTIME=" in client.get(
            f"/v1/vms/{vm['id']}/console?tail=20").body, 30, "the console on the target")
        back = client.post(f"/v1/vms/{vm['id']}/migrate", {})
        assert back.error_code == "vm_not_migratable" and "address" in back.body["error"]["message"]
        deleted = client.delete(f"/v1/vms/{vm['id']}")
        assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
        assert pool_files_of(remote_host, vm["id"]) == []


def test_a_copy_past_its_timeout_is_aborted_and_the_guest_stays(
        two_hosts: Callable[[Config], App], e2e_config: Config, remote_host: RemoteHost,
        remote_conn: libvirt.virConnect, remote_network: IsolatedNetwork,
        system_conn: libvirt.virConnect) -> None:
    # 1 MiB/s cannot carry 128 MiB of guest memory within 3 s.
    app = two_hosts(replace(e2e_config, migration_max_mbps=1, migration_timeout_s=3))
    with served(app) as client:
        register_tiny_image(client)
        add_remote(client, remote_host, remote_network)
        vm = booted(client)
        before = uptime_s(system_conn, vm["id"])
        reply = client.post(f"/v1/vms/{vm['id']}/migrate", {})  # the scheduler's pick
        task = client.wait_task(reply.body["id"])
        assert (task["status"], task["error"]["code"]) == ("failed", "migration_timeout"), task
        assert "runs on host local as before" in task["error"]["message"]
        shown = client.get(f"/v1/vms/{vm['id']}").body
        assert (shown["host"], shown["status"]) == ("local", "running")
        assert not domain_exists(remote_conn, vm["id"])  # the target keeps nothing
        assert pool_files_of(remote_host, vm["id"]) == []
        assert uptime_s(system_conn, vm["id"]) > before
        assert client.get("/v1/hosts/remote").body["allocated"]["vcpus"] == 0


def running_on(conns: dict[str, libvirt.virConnect], vm_id: str) -> list[str]:
    """The hosts on which a domain of the VM runs (or is paused: a copy all the same)."""
    found = []
    for host, conn in conns.items():
        try:
            if conn.lookupByUUIDString(vm_id).isActive():
                found.append(host)
        except libvirt.libvirtError:
            continue
    return found


def test_an_api_killed_mid_migration_leaves_one_running_copy(
        e2e_config: Config, tmp_path: Path, remote_host: RemoteHost,
        remote_network: IsolatedNetwork, system_conn: libvirt.virConnect,
        remote_conn: libvirt.virConnect) -> None:
    log = tmp_path / "server.log"
    api = ApiProcess(e2e_config, log, {"IAAS_MIGRATION_MAX_MBPS": "1"})  # a slow copy
    try:
        register_tiny_image(api.client)
        add_remote(api.client, remote_host, remote_network)
        vm = booted(api.client)
        task_id = api.client.post(f"/v1/vms/{vm['id']}/migrate", {"host": "remote"}).body["id"]
        eventually(lambda: (api.client.get(f"/v1/tasks/{task_id}").body["progress"] or {}
                            ).get("phase") == "transferring", 120, "the copy under way")
        api.kill()  # libvirtd goes on copying: the peer-to-peer job is its own
        api = ApiProcess(e2e_config, log)
        task = api.client.wait_task(task_id)
        where = running_on({"local": system_conn, "remote": remote_conn}, vm["id"])
        shown = api.client.get(f"/v1/vms/{vm['id']}").body
        print(f"\nAPI SIGKILLed mid-migration; after its restart the task {task['status']} "
              f"({(task['error'] or {}).get('code')}), the VM runs on {where}")
        assert where == [shown["host"]], (where, shown["host"], task)
        assert task["status"] == "succeeded" or task["error"]["code"] == "migration_interrupted"
        assert shown["status"] == "running"
        other = "remote" if shown["host"] == "local" else "local"
        assert api.client.get(f"/v1/hosts/{other}").body["allocated"]["vcpus"] == 0
        deleted = api.client.delete(f"/v1/vms/{vm['id']}")
        assert api.client.wait_task(deleted.body["id"])["status"] == "succeeded"
        assert pool_files_of(remote_host, vm["id"]) == []
        assert not (e2e_config.instances_dir / vm["id"]).exists()
    finally:
        api.stop()
        installation = _installation_id(e2e_config) or "-"
        purge_domains(system_conn, [], installation)
        fresh = remote_host.open()
        try:
            purge_domains(fresh, [], installation)
            remove_pool(fresh, POOL)
        finally:
            fresh.close()


def test_layers_of_the_root_disk_and_a_volume_move_with_the_vm(
        two_hosts: Callable[[Config], App], e2e_config: Config, remote_host: RemoteHost,
        remote_conn: libvirt.virConnect, remote_network: IsolatedNetwork,
        system_conn: libvirt.virConnect) -> None:
    app = two_hosts(e2e_config)
    with served(app) as client:
        register_tiny_image(client)
        add_remote(client, remote_host, remote_network)
        done(client, client.post("/v1/volumes", {"name": "data", "size_gb": 1, "host": "local"}))
        done(client, client.post("/v1/volumes/data/snapshots", {"name": "empty"}))  # 2 layers
        reply = client.post("/v1/vms", {"name": f"mig-{secrets.token_hex(3)}", "cpu": 1,
                                        "ram": 128, "image_name": "tiny-linux",
                                        "volumes": [{"volume": "data"}]})
        done(client, reply)
        vm_id = reply.body["id"]
        console_has(client, vm_id, READY)
        done(client, client.post(f"/v1/vms/{vm_id}/stop", {}))
        done(client, client.post(f"/v1/vms/{vm_id}/snapshots", {"name": "clean"}))
        done(client, client.post(f"/v1/vms/{vm_id}/start", {}))
        eventually(lambda: READY in client.get(f"/v1/vms/{vm_id}/console?tail=80").body, 180,
                   "the guest's second boot")
        wrote = "IAAS-DISK-WROTE vdc "  # each boot stamps the volume anew
        stamp = console_has(client, vm_id, wrote + r"IAAS-DATA \S+ \S+")[len(wrote):]

        task = done(client, client.post(f"/v1/vms/{vm_id}/migrate", {"host": "remote"}))
        assert task["progress"]["phase"] == "done"
        assert client.get("/v1/volumes/data").body["host"] == "remote"
        volume_files = pool_files_of(remote_host, app.installation_id[:8])
        assert len(volume_files) == 2  # the frozen layer and the top, rebuilt as a chain
        assert sorted(pool_files_of(remote_host, vm_id)) == sorted([
            f"{vm_id}.qcow2", f"{vm_id}-layer-1.qcow2", f"{vm_id}-seed.iso",
            f"{vm_id}-console.log"])
        assert backing_of(remote_conn, f"{vm_id}-layer-1.qcow2") == volume_path(
            remote_conn, f"{vm_id}.qcow2")
        found = ask(remote_conn, vm_id, "head -c 40 /dev/vdc; echo", re.compile(
            re.escape(stamp.encode())))
        assert found is not None  # what the guest wrote before the move is on the target
        assert not (e2e_config.instances_dir / vm_id).exists()
        assert not [name for name in os.listdir(e2e_config.volumes_dir)
                    if name.startswith(app.installation_id[:8])]

        # The root disk's layers keep working where they are now: revert, boot again.
        done(client, client.post(f"/v1/vms/{vm_id}/stop", {}))
        done(client, client.post(f"/v1/vms/{vm_id}/revert", {"snapshot": "clean"}))
        started = client.wait_task(client.post(f"/v1/vms/{vm_id}/start", {}).body["id"])
        assert started["status"] == "succeeded", started["error"]
        eventually(lambda: READY in client.get(f"/v1/vms/{vm_id}/console?tail=80").body, 180,
                   "the guest's boot on the target after a revert")
        done(client, client.delete(f"/v1/vms/{vm_id}"))
        done(client, client.delete("/v1/volumes/data"))
        assert pool_files_of(remote_host, vm_id) == []
        assert pool_files_of(remote_host, app.installation_id[:8]) == []


def volume_path(conn: libvirt.virConnect, name: str) -> str:
    pool = conn.storagePoolLookupByName(POOL)
    return str(pool.storageVolLookupByName(name).path())


def backing_of(conn: libvirt.virConnect, name: str) -> str | None:
    pool = conn.storagePoolLookupByName(POOL)
    xml = pool.storageVolLookupByName(name).XMLDesc(0)
    return ET.fromstring(xml).findtext("./backingStore/path")


def test_a_drain_moves_a_running_guest_live_and_empties_the_host(
        two_hosts: Callable[[Config], App], e2e_config: Config, remote_host: RemoteHost,
        remote_conn: libvirt.virConnect, remote_network: IsolatedNetwork,
        system_conn: libvirt.virConnect) -> None:
    app = two_hosts(e2e_config)
    with served(app) as client:
        register_tiny_image(client)
        add_remote(client, remote_host, remote_network)
        vm = booted(client)
        before, asked = uptime_s(system_conn, vm["id"]), time.monotonic()
        reply = client.post("/v1/hosts/local/drain", {})
        assert reply.status == 202, reply.body
        assert reply.body["drain"]["vms"] == 1 and reply.body["drain"]["unmovable"] == []
        task = client.wait_task(reply.body["drain"]["tasks"][0]["task_id"], 300)
        assert task["status"] == "succeeded", task
        took = time.monotonic() - asked
        drain = client.get("/v1/hosts/local").body
        assert (drain["vms"], drain["enabled"], drain["drain"]["status"],
                drain["drain"]["moved"]) == (0, False, "done", 1)
        assert client.get(f"/v1/vms/{vm['id']}").body["host"] == "remote"
        assert not domain_exists(system_conn, vm["id"])
        after = uptime_s(remote_conn, vm["id"])
        print(f"\ndrain of local: 1 VM moved live in {took:.1f} s, guest uptime {before:.1f} s "
              f"-> {after:.1f} s")
        assert after >= before + took - 2  # the guest ran on through the drain
        done(client, client.delete(f"/v1/vms/{vm['id']}"))
