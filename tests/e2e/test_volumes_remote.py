"""Volumes on a second host reached over qemu+tls: made, copied from an image, attached from a
VM's first boot and hot-plugged, snapshotted and deleted through libvirt's storage pool API on
that host; nothing of them is written on this machine."""
from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import (
    IsolatedNetwork,
    purge_domains,
    remove_network,
    start_isolated_network,
)
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.http_client import HttpClient
from tests.e2e.test_volumes import done, serial

POOL = "iaas-e2e-vol"


@pytest.fixture
def remote_network(remote_conn: libvirt.virConnect) -> Iterator[IsolatedNetwork]:
    net = start_isolated_network(remote_conn, "iaas-e2e-rv")
    yield net
    remove_network(remote_conn, net)


def pool_files(conn: libvirt.virConnect, prefix: str) -> list[str]:
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    return sorted(name for name in pool.listVolumes() if name.startswith(prefix))


def console_has(client: HttpClient, vm_id: str, pattern: str, seconds: float = 90) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = client.get(f"/v1/vms/{vm_id}/console?tail=400").body
        found = re.search(pattern, text)
        if found:
            return found.group(0)
        assert time.monotonic() < deadline, f"{pattern} never appeared:\n{text[-1500:]}"
        time.sleep(0.5)


def test_volumes_live_on_the_remote_host(
        make_e2e_app: E2eAppFactory, e2e_config: Config, remote_host: RemoteHost,
        remote_conn: libvirt.virConnect, remote_network: IsolatedNetwork) -> None:
    app = make_e2e_app(e2e_config)
    prefix = f"{app.installation_id[:8]}-vol-"
    try:
        with served(app) as client:
            register_tiny_image(client)
            added = client.post("/v1/hosts", {"name": "remote", "uri": remote_host.uri,
                                              "storage": "pool", "storage_pool": POOL,
                                              "network": remote_network.name,
                                              "domain_type": "qemu"})
            assert added.status == 201, added.body
            done(client, client.post("/v1/volumes", {"name": "far", "size_gb": 1,
                                                     "host": "remote"}))
            done(client, client.post("/v1/volumes", {"name": "far-copy", "size_gb": 1,
                                                     "image_name": "tiny-linux",
                                                     "host": "remote"}))
            far = client.get("/v1/volumes/far").body
            assert far["host"] == "remote" and far["status"] == "available"
            assert len(pool_files(remote_conn, prefix)) == 2
            assert not (e2e_config.images_dir / "iaas-volumes").exists() or not list(
                (e2e_config.images_dir / "iaas-volumes").iterdir())

            # The VM follows its volume to the remote host and has it from its first boot.
            reply = client.post("/v1/vms", {"name": f"r-{secrets.token_hex(3)}", "cpu": 1,
                                            "ram": 256, "image_name": "tiny-linux",
                                            "volumes": [{"volume": "far"}]})
            done(client, reply)
            vm_id = reply.body["id"]
            assert client.get(f"/v1/vms/{vm_id}").body["host"] == "remote"
            written = console_has(client, vm_id, r"IAAS-DISK-WROTE \S+ IAAS-DATA \S+ \S+")
            console_has(client, vm_id, "IAAS-TINY-READY")
            # A volume of this host cannot go to a VM of the other.
            done(client, client.post("/v1/volumes", {"name": "near", "size_gb": 1,
                                                     "host": "local"}))
            elsewhere = client.post(f"/v1/vms/{vm_id}/volumes", {"volume": "near"})
            assert elsewhere.status == 409 and elsewhere.error_code == "volume_on_other_host"
            assert elsewhere.body["error"]["details"] == {
                "volume": "near", "volume_host": "local", "vm_host": "remote"}
            done(client, client.delete("/v1/volumes/near"))
            # Hot-plugged over TLS too.
            done(client, client.post(f"/v1/vms/{vm_id}/volumes", {"volume": "far-copy",
                                                                  "read_only": True}))
            copy = client.get("/v1/volumes/far-copy").body
            console_has(client, vm_id, rf"IAAS-DISK-SEEN \S+ serial={serial(copy)} ro=1")
            done(client, client.delete(f"/v1/vms/{vm_id}/volumes/far-copy"))
            done(client, client.delete(f"/v1/vms/{vm_id}"))

            # The data stayed in the remote pool: a snapshot and then the volume's delete.
            done(client, client.post("/v1/volumes/far/snapshots", {"name": "s1"}))
            assert len(pool_files(remote_conn, prefix)) == 3
            reader = client.post("/v1/vms", {"name": f"q-{secrets.token_hex(3)}", "cpu": 1,
                                             "ram": 256, "image_name": "tiny-linux",
                                             "volumes": [{"volume": "far", "read_only": True}]})
            done(client, reader)
            stamp = written.split(" ", 2)[2]
            console_has(client, reader.body["id"],
                        rf"IAAS-DISK-SEEN \S+ serial={serial(far)} ro=1 data={re.escape(stamp)}")
            # A stopped remote VM's root disk: snapshot, revert, image (its layers in the pool).
            reader_id = reader.body["id"]
            done(client, client.post(f"/v1/vms/{reader_id}/stop", {}))
            done(client, client.post(f"/v1/vms/{reader_id}/snapshots", {"name": "clean"}))
            assert pool_files(remote_conn, f"{reader_id}-layer-") == [f"{reader_id}-layer-1.qcow2"]
            done(client, client.post(f"/v1/vms/{reader_id}/revert", {"snapshot": "clean"}))
            assert pool_files(remote_conn, f"{reader_id}-layer-") == [f"{reader_id}-layer-2.qcow2"]
            made = client.post(f"/v1/vms/{reader_id}/image", {"name": "remote-made"})
            assert made.status == 202, made.body
            assert client.wait_task(made.body["task_id"], 120)["status"] == "succeeded"
            image = client.get("/v1/images/remote-made").body
            assert image["status"] == "active" and image["sha256"]
            assert (e2e_config.images_dir / image["file"]).stat().st_size > 0
            done(client, client.post(f"/v1/vms/{reader_id}/start", {}))
            done(client, client.delete(f"/v1/vms/{reader_id}"))
            assert pool_files(remote_conn, reader_id) == []
            for name in ("far", "far-copy"):
                done(client, client.delete(f"/v1/volumes/{name}"))
            assert pool_files(remote_conn, prefix) == []
    finally:
        fresh = remote_host.open()
        try:
            purge_domains(fresh, [], app.installation_id)
            remove_pool(fresh, POOL)
        finally:
            fresh.close()
