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
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]

from scripts.harness.console import ask, uptime_s
from scripts.harness.host import IsolatedNetwork, domain_exists, purge_domains
from scripts.harness.remote_host import RemoteHost
from src.config import Config
from src.database import hosts as host_dao
from tests.e2e.conftest import (
    REMOTE_POOL,
    TwoHosts,
    add_remote,
    clean_remote,
    eventually,
    register_tiny_image,
)
from tests.e2e.http_client import HttpClient
from tests.e2e.test_resilience import ApiProcess, _installation_id
from tests.e2e.test_volumes import done
from tests.e2e.test_volumes_remote import console_has

READY = "IAAS-TINY-READY"


def boots(client: HttpClient, vm_id: str, what: str = "the guest's boot") -> None:
    eventually(lambda: READY in client.get(f"/v1/vms/{vm_id}/console?tail=80").body, 180, what)


def booted(client: HttpClient) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": f"mig-{secrets.token_hex(4)}", "cpu": 1,
                                    "ram": 128, "image_name": "tiny-linux", "host": "local"})
    assert reply.status == 202, reply.body
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    boots(client, reply.body["id"])
    return dict(reply.body)


def pool_files_of(remote: RemoteHost, vm_id: str) -> list[str]:
    conn = remote.open()
    try:
        pool = conn.storagePoolLookupByName(REMOTE_POOL)
        pool.refresh(0)
        return [name for name in pool.listVolumes() if vm_id in name]
    finally:
        conn.close()


def deleted_everywhere(client: HttpClient, remote: RemoteHost, config: Config,
                       vm_id: str) -> None:
    """Delete the VM; no file of it stays on either host."""
    done(client, client.delete(f"/v1/vms/{vm_id}"))
    assert pool_files_of(remote, vm_id) == []
    assert not (config.instances_dir / vm_id).exists()


def test_a_running_guest_moves_live_and_goes_on(two_hosts: TwoHosts) -> None:
    with two_hosts.serve() as client:
        vm = booted(client)
        before, asked = uptime_s(two_hosts.system_conn, vm["id"]), time.monotonic()
        reply = client.post(f"/v1/vms/{vm['id']}/migrate", {"host": "remote"})
        assert reply.status == 202 and reply.body["action"] == "migrate", reply.body
        task = client.wait_task(reply.body["id"])
        took = time.monotonic() - asked
        assert task["status"] == "succeeded", task
        assert task["progress"]["phase"] == "done" and task["progress"]["downtime_ms"] >= 0
        shown = client.get(f"/v1/vms/{vm['id']}").body
        assert (shown["host"], shown["status"], shown["power_state"]) == (
            "remote", "running", "running")
        assert not domain_exists(two_hosts.system_conn, vm["id"])  # the source keeps nothing
        assert not (two_hosts.config.instances_dir / vm["id"]).exists()
        after = uptime_s(two_hosts.remote_conn, vm["id"])
        print(f"\nlive migration: {took:.1f} s from the request to the task's end, guest "
              f"uptime {before:.1f} s -> {after:.1f} s, downtime "
              f"{task['progress']['downtime_ms']} ms")
        assert after >= before + (time.monotonic() - asked) - 2  # never rebooted
        eventually(lambda: "IAAS-UPTIME=" in client.get(
            f"/v1/vms/{vm['id']}/console?tail=20").body, 30, "the console on the target")
        back = client.post(f"/v1/vms/{vm['id']}/migrate", {})
        assert back.error_code == "vm_not_migratable" and "address" in back.body["error"]["message"]
        deleted_everywhere(client, two_hosts.remote, two_hosts.config, vm["id"])


def test_a_copy_past_its_timeout_is_aborted_and_the_guest_stays(two_hosts: TwoHosts) -> None:
    # 1 MiB/s cannot carry 128 MiB of guest memory within 3 s.
    slow = replace(two_hosts.config, migration_max_mbps=1, migration_timeout_s=3)
    with two_hosts.serve(two_hosts.make_app(slow)) as client:
        vm = booted(client)
        before = uptime_s(two_hosts.system_conn, vm["id"])
        reply = client.post(f"/v1/vms/{vm['id']}/migrate", {})  # the scheduler's pick
        task = client.wait_task(reply.body["id"])
        assert (task["status"], task["error"]["code"]) == ("failed", "migration_timeout"), task
        assert "runs on host local as before" in task["error"]["message"]
        shown = client.get(f"/v1/vms/{vm['id']}").body
        assert (shown["host"], shown["status"]) == ("local", "running")
        assert not domain_exists(two_hosts.remote_conn, vm["id"])  # the target keeps nothing
        assert pool_files_of(two_hosts.remote, vm["id"]) == []
        assert uptime_s(two_hosts.system_conn, vm["id"]) > before
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


def one_copy_runs(client: HttpClient, conns: dict[str, libvirt.virConnect], task_id: str,
                  vm_id: str, what: str) -> None:
    """After a migration was cut short: the task ended, exactly one copy runs, on the host the
    VM's row names, and the other host holds none of its capacity."""
    task = client.wait_task(task_id)
    where = running_on(conns, vm_id)
    shown = client.get(f"/v1/vms/{vm_id}").body
    print(f"\n{what}; the task then {task['status']} "
          f"({(task['error'] or {}).get('code')}), the VM runs on {where}")
    assert where == [shown["host"]], (where, shown, task)
    assert task["status"] == "succeeded" or task["error"]["code"] == "migration_interrupted"
    assert shown["status"] == "running"
    other = "remote" if shown["host"] == "local" else "local"
    assert client.get(f"/v1/hosts/{other}").body["allocated"]["vcpus"] == 0


def transferring(client: HttpClient, task_id: str) -> None:
    eventually(lambda: (client.get(f"/v1/tasks/{task_id}").body["progress"] or {}
                        ).get("phase") == "transferring", 120, "the copy under way")


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
        transferring(api.client, task_id)
        api.kill()  # libvirtd goes on copying: the peer-to-peer job is its own
        api = ApiProcess(e2e_config, log)
        one_copy_runs(api.client, {"local": system_conn, "remote": remote_conn}, task_id,
                      vm["id"], "API SIGKILLed mid-migration and restarted")
        deleted_everywhere(api.client, remote_host, e2e_config, vm["id"])
    finally:
        api.stop()
        installation = _installation_id(e2e_config) or "-"
        purge_domains(system_conn, [], installation)
        clean_remote(remote_host, [installation])


def test_layers_of_the_root_disk_and_a_volume_move_with_the_vm(two_hosts: TwoHosts) -> None:
    app = two_hosts.make_app(two_hosts.config)
    remote, remote_conn = two_hosts.remote, two_hosts.remote_conn
    with two_hosts.serve(app) as client:
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
        boots(client, vm_id, "the guest's second boot")
        wrote = "IAAS-DISK-WROTE vdc "  # each boot stamps the volume anew
        stamp = console_has(client, vm_id, wrote + r"IAAS-DATA \S+ \S+")[len(wrote):]

        task = done(client, client.post(f"/v1/vms/{vm_id}/migrate", {"host": "remote"}))
        assert task["progress"]["phase"] == "done"
        assert client.get("/v1/volumes/data").body["host"] == "remote"
        with app.db.read() as conn:  # the volume's size moved in the hosts' usage counters
            assert host_dao.usage(conn)["remote"].volumes_gb == 1
            assert {host: used for host, used in host_dao.usage(conn).items()
                    if used != host_dao.Usage()} == host_dao.recount(conn)
        volume_files = pool_files_of(remote, app.installation_id[:8])
        assert len(volume_files) == 2  # the frozen layer and the top, rebuilt as a chain
        assert sorted(pool_files_of(remote, vm_id)) == sorted([
            f"{vm_id}.qcow2", f"{vm_id}-layer-1.qcow2", f"{vm_id}-seed.iso",
            f"{vm_id}-console.log"])
        assert backing_of(remote_conn, f"{vm_id}-layer-1.qcow2") == volume_path(
            remote_conn, f"{vm_id}.qcow2")
        found = ask(remote_conn, vm_id, "head -c 40 /dev/vdc; echo", re.compile(
            re.escape(stamp.encode())))
        assert found is not None  # what the guest wrote before the move is on the target
        assert not (two_hosts.config.instances_dir / vm_id).exists()
        assert not [name for name in os.listdir(two_hosts.config.volumes_dir)
                    if name.startswith(app.installation_id[:8])]

        # The root disk's layers keep working where they are now: revert, boot again.
        done(client, client.post(f"/v1/vms/{vm_id}/stop", {}))
        done(client, client.post(f"/v1/vms/{vm_id}/revert", {"snapshot": "clean"}))
        started = client.wait_task(client.post(f"/v1/vms/{vm_id}/start", {}).body["id"])
        assert started["status"] == "succeeded", started["error"]
        boots(client, vm_id, "the guest's boot on the target after a revert")
        deleted_everywhere(client, remote, two_hosts.config, vm_id)
        done(client, client.delete("/v1/volumes/data"))
        assert pool_files_of(remote, app.installation_id[:8]) == []


def volume_path(conn: libvirt.virConnect, name: str) -> str:
    pool = conn.storagePoolLookupByName(REMOTE_POOL)
    return str(pool.storageVolLookupByName(name).path())


def backing_of(conn: libvirt.virConnect, name: str) -> str | None:
    pool = conn.storagePoolLookupByName(REMOTE_POOL)
    xml = pool.storageVolLookupByName(name).XMLDesc(0)
    return ET.fromstring(xml).findtext("./backingStore/path")


def test_a_drain_moves_a_running_guest_live_and_empties_the_host(two_hosts: TwoHosts) -> None:
    with two_hosts.serve() as client:
        vm = booted(client)
        before, asked = uptime_s(two_hosts.system_conn, vm["id"]), time.monotonic()
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
        assert not domain_exists(two_hosts.system_conn, vm["id"])
        after = uptime_s(two_hosts.remote_conn, vm["id"])
        print(f"\ndrain of local: 1 VM moved live in {took:.1f} s, guest uptime {before:.1f} s "
              f"-> {after:.1f} s")
        assert after >= before + took - 2  # the guest ran on through the drain
        done(client, client.delete(f"/v1/vms/{vm['id']}"))
