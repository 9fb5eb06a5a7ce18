"""A real host dies with a guest on it (its libvirtd killed; the guest lives on, as on a host
nobody fenced): the guest, whose disk lived in that host's own pool, is rebuilt here from its
base image only with rebuild_lost_disks and boots; when the host's libvirtd comes back, the
reconciler destroys and undefines the old copy and deletes its disks there."""
from __future__ import annotations

import libvirt  # type: ignore[import-untyped]

from scripts.harness.remote_host import RemoteHost
from tests.e2e.conftest import REMOTE_POOL, TwoHosts, eventually
from tests.e2e.http_client import HttpClient
from tests.e2e.test_two_hosts import DOWN_WITHIN_S, READY, create


def test_a_dead_hosts_guest_is_rebuilt_here_and_its_old_copy_removed_when_it_returns(
        two_hosts: TwoHosts) -> None:
    with two_hosts.serve() as client:
        _scenario(client, two_hosts)


def _left_on(remote: RemoteHost, vm_id: str) -> tuple[bool, list[str]]:
    """(whether the host has a domain of the VM, its volumes in the pool)."""
    conn = remote.open()
    try:
        try:
            conn.lookupByUUIDString(vm_id)
            domain = True
        except libvirt.libvirtError:
            domain = False
        volumes = [name for name in conn.storagePoolLookupByName(REMOTE_POOL).listVolumes()
                   if vm_id in name]
        return domain, volumes
    finally:
        conn.close()


def _scenario(client: HttpClient, two_hosts: TwoHosts) -> None:
    remote, config = two_hosts.remote, two_hosts.config
    there = create(client, "remote")
    assert client.wait_task(there["task"]["id"])["status"] == "succeeded"
    eventually(lambda: READY in client.get(f"/v1/vms/{there['id']}/console?tail=50").body,
               120, "the remote guest's boot")
    refused = client.post("/v1/hosts/remote/evacuate", {})
    assert (refused.status, refused.error_code) == (409, "host_not_down"), refused.body

    remote.kill_libvirtd()
    eventually(lambda: client.get("/v1/hosts/remote").body["state"] == "down", DOWN_WITHIN_S,
               "the remote host shown down")
    skipped = client.post("/v1/hosts/remote/evacuate", {})
    assert skipped.status == 202, skipped.body
    assert skipped.body["tasks"] == []
    assert [vm["reason"] for vm in skipped.body["skipped"]] == ["disks_on_down_host"]

    rebuilt = client.post("/v1/hosts/remote/evacuate", {"rebuild_lost_disks": True})
    assert rebuilt.status == 202, rebuilt.body
    assert [task["target"] for task in rebuilt.body["tasks"]] == ["local"]
    task = client.wait_task(rebuilt.body["tasks"][0]["task_id"])
    assert task["status"] == "succeeded", task
    shown = client.get(f"/v1/vms/{there['id']}").body
    assert (shown["host"], shown["status"], shown["power_state"]) == (
        "local", "running", "running")
    eventually(lambda: READY in client.get(f"/v1/vms/{there['id']}/console?tail=50").body,
               120, "the rebuilt guest's boot here")
    events = client.get(f"/v1/vms/{there['id']}/events").body["events"]
    assert "fresh root disk" in next(e["reason"] for e in events if e["action"] == "evacuate")
    assert (e2e_instance := config.instances_dir / there["id"] / "disk.qcow2").is_file()

    remote.start_libvirtd()
    # (it stays disabled: the evacuation disabled it; `reason` is null once it answers)
    eventually(lambda: client.get("/v1/hosts/remote").body["reason"] is None, 30,
               "the remote host answering again")
    eventually(lambda: _left_on(remote, there["id"]) == (False, []), 60,
               "the old copy removed from the returning host")
    assert e2e_instance.is_file()
    assert client.get(f"/v1/vms/{there['id']}").body["power_state"] == "running"

    deleted = client.delete(f"/v1/vms/{there['id']}")
    assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
    assert client.delete("/v1/hosts/remote").status == 204
