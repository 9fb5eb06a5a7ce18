"""Volumes on qemu:///system with real guests: data survives detach and the VM's delete and
shows in the next VM, a revert gives back exactly a snapshot's bytes, a read-only attachment
cannot be written, and nothing is left behind.

The tiny guest watches its disks: a volume that appears is printed (`IAAS-DISK-SEEN <dev>
serial=<serial> ro=<0|1> data=<stamp or ->`), then stamped (`IAAS-DISK-WROTE <dev> <stamp>` or
`IAAS-DISK-WRITE-FAILED <dev>`); one that leaves prints `IAAS-DISK-GONE <dev>`.
"""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import TINY_IMAGE_NAME
from src.app import App
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.http_client import HttpClient
from tests.e2e.test_boot import BOOT_DEADLINE_S, wait_for_console

SEEN = r"IAAS-DISK-SEEN (vd[a-z]+) serial={serial} ro=([01]) data=(\S+(?: \S+)*)"


def serial(volume: dict[str, Any]) -> str:
    return "vol-" + volume["id"].replace("-", "")[:16]


def done(client: HttpClient, reply: Any) -> dict[str, Any]:
    assert reply.status == 202, reply.body
    task = reply.body.get("task") or reply.body
    ended = client.wait_task(task["id"], 120)
    assert ended["status"] == "succeeded", ended
    return ended


def running_vm(client: HttpClient, name: str, **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256,
                                    "image_name": TINY_IMAGE_NAME, **extra})
    done(client, reply)
    return dict(client.get(f"/v1/vms/{reply.body['id']}").body)


def console(config: Config, vm: dict[str, Any]) -> Path:
    return config.instances_dir / vm["id"] / "console.log"


def ready(config: Config, vm: dict[str, Any]) -> None:
    wait_for_console(console(config, vm), "IAAS-TINY-READY", time.monotonic() + BOOT_DEADLINE_S)


def seen_after(config: Config, vm: dict[str, Any], volume: dict[str, Any],
               offset: int) -> tuple[str, str, str]:
    """(device, ro, data) of the first SEEN line for the volume after offset in the log."""
    pattern = SEEN.format(serial=re.escape(serial(volume)))
    deadline = time.monotonic() + 60
    log = console(config, vm)
    while True:
        text = log.read_bytes()[offset:].decode(errors="replace")
        found = re.search(pattern, text)
        if found:
            return found.group(1), found.group(2), found.group(3).strip()
        assert time.monotonic() < deadline, f"{pattern} never appeared:\n{text[-2000:]}"
        time.sleep(0.3)


def stamp_after(config: Config, vm: dict[str, Any], device: str, offset: int) -> str:
    found = wait_for_console_from(console(config, vm), rf"IAAS-DISK-WROTE {device} (.+)", offset)
    return found.group(1).strip()


def wait_for_console_from(log: Path, pattern: str, offset: int) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while True:
        found = re.search(pattern, log.read_bytes()[offset:].decode(errors="replace"))
        if found:
            return found
        assert time.monotonic() < deadline, f"{pattern} never appeared in {log}"
        time.sleep(0.3)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def attach(client: HttpClient, vm: dict[str, Any], volume: dict[str, Any],
           read_only: bool = False) -> None:
    done(client, client.post(f"/v1/vms/{vm['id']}/volumes",
                             {"volume": volume["id"], "read_only": read_only}))


def detach(client: HttpClient, vm: dict[str, Any], volume: dict[str, Any]) -> None:
    done(client, client.delete(f"/v1/vms/{vm['id']}/volumes/{volume['id']}"))


def live_disks(conn: libvirt.virConnect, vm: dict[str, Any]) -> str:
    return str(conn.lookupByUUIDString(vm["id"]).XMLDesc(0))


@pytest.fixture
def tiny(live_client: HttpClient) -> HttpClient:
    register_tiny_image(live_client)
    return live_client


def test_data_outlives_the_vm_and_a_revert_gives_back_the_snapshot(
        tiny: HttpClient, e2e_config: Config, system_conn: libvirt.virConnect) -> None:
    client = tiny
    volume = client.post("/v1/volumes", {"name": "ckpt", "size_gb": 1})
    done(client, volume)
    volume = client.get("/v1/volumes/ckpt").body
    first = running_vm(client, f"a-{secrets.token_hex(3)}")
    ready(e2e_config, first)

    mark = size_of(console(e2e_config, first))
    attach(client, first, volume)  # hot-plugged into the running guest
    device, ro, data = seen_after(e2e_config, first, volume, mark)
    assert (ro, data) == ("0", "-")
    written = stamp_after(e2e_config, first, device, mark)
    shown = client.get("/v1/volumes/ckpt").body
    assert shown["status"] == "in-use"
    assert [(a["vm_id"], a["read_only"]) for a in shown["attachments"]] == [(first["id"], False)]
    assert serial(volume) in live_disks(system_conn, first)

    mark = size_of(console(e2e_config, first))
    detach(client, first, volume)
    wait_for_console_from(console(e2e_config, first), r"IAAS-DISK-GONE vd", mark)
    assert serial(volume) not in live_disks(system_conn, first)
    assert client.get("/v1/volumes/ckpt").body["status"] == "available"

    snap = client.post(f"/v1/volumes/{volume['id']}/snapshots", {"name": "s1"})
    done(client, snap)
    assert [s["name"] for s in client.get("/v1/volumes/ckpt/snapshots").body["snapshots"]] == [
        "s1"]

    # The VM goes; the data stays and is read by the next VM, which writes over it.
    attach(client, first, volume)
    done(client, client.delete(f"/v1/vms/{first['id']}"))
    after = client.get("/v1/volumes/ckpt").body
    assert after["status"] == "available" and after["attachments"] == []
    second = running_vm(client, f"b-{secrets.token_hex(3)}")
    ready(e2e_config, second)
    mark = size_of(console(e2e_config, second))
    attach(client, second, volume)
    device, ro, data = seen_after(e2e_config, second, volume, mark)
    assert data == written, "the next VM reads what the first one wrote"
    overwritten = stamp_after(e2e_config, second, device, mark)
    assert overwritten != written
    mark = size_of(console(e2e_config, second))
    detach(client, second, volume)
    # The guest's watcher must see the disk go before it comes back: a re-attach within one of
    # its polls would look to it like the same disk still there (never SEEN again).
    wait_for_console_from(console(e2e_config, second), r"IAAS-DISK-GONE vd", mark)

    # Reverting gives back the snapshot's bytes: the first VM's stamp, not the second's.
    done(client, client.post("/v1/volumes/ckpt/revert", {"snapshot": "s1"}))
    mark = size_of(console(e2e_config, second))
    attach(client, second, volume, read_only=True)
    _device, ro, data = seen_after(e2e_config, second, volume, mark)
    assert (ro, data) == ("1", written)
    wait_for_console_from(console(e2e_config, second), r"IAAS-DISK-WRITE-FAILED vd", mark)
    detach(client, second, volume)

    # A volume with an attachment cannot go; without, it goes with its snapshot and files.
    attach(client, second, volume)
    refused = client.delete("/v1/volumes/ckpt")
    assert refused.status == 409 and refused.error_code == "volume_in_use"
    assert refused.body["error"]["details"]["vms"] == [
        {"vm_id": second["id"], "vm_name": second["name"]}]
    detach(client, second, volume)
    done(client, client.delete("/v1/volumes/ckpt"))
    assert client.get("/v1/volumes/ckpt").error_code == "volume_not_found"
    leftovers = list((e2e_config.images_dir / "iaas-volumes").glob("*"))
    assert leftovers == [], leftovers


def test_a_multiattach_volume_is_shared_read_only(tiny: HttpClient, e2e_config: Config) -> None:
    client = tiny
    done(client, client.post("/v1/volumes", {"name": "dataset", "size_gb": 1,
                                             "multiattach": True}))
    done(client, client.post("/v1/volumes", {"name": "private", "size_gb": 1}))
    dataset = client.get("/v1/volumes/dataset").body
    private = client.get("/v1/volumes/private").body
    vms = [running_vm(client, f"r{index}-{secrets.token_hex(3)}") for index in range(2)]
    for vm in vms:
        ready(e2e_config, vm)
    marks = [size_of(console(e2e_config, vm)) for vm in vms]
    for vm in vms:
        attach(client, vm, dataset, read_only=True)
    for vm, mark in zip(vms, marks, strict=True):
        _device, ro, _data = seen_after(e2e_config, vm, dataset, mark)
        assert ro == "1"
        wait_for_console_from(console(e2e_config, vm), r"IAAS-DISK-WRITE-FAILED vd", mark)
    assert len(client.get("/v1/volumes/dataset").body["attachments"]) == 2
    rw = client.post(f"/v1/vms/{vms[0]['id']}/volumes", {"volume": "dataset"})
    assert rw.status == 400 and rw.error_code == "multiattach_requires_read_only"

    attach(client, vms[0], private)
    second = client.post(f"/v1/vms/{vms[1]['id']}/volumes", {"volume": "private",
                                                             "read_only": True})
    assert second.status == 409 and second.error_code == "volume_in_use"
    snap = client.post("/v1/volumes/private/snapshots", {"name": "busy"})
    assert snap.status == 409 and snap.error_code == "volume_in_use"
    revert = client.post("/v1/volumes/private/revert", {"snapshot": "nope"})
    assert revert.status == 400 and revert.error_code == "snapshot_not_found"
    for vm in vms:
        done(client, client.delete(f"/v1/vms/{vm['id']}"))
    assert client.get("/v1/volumes/dataset").body["status"] == "available"
    assert client.get("/v1/volumes/private").body["status"] == "available"


def test_a_volume_from_an_image_is_a_full_copy(tiny: HttpClient, e2e_config: Config) -> None:
    client = tiny
    done(client, client.post("/v1/volumes", {"name": "copy", "size_gb": 2,
                                             "image_name": TINY_IMAGE_NAME}))
    volume = client.get("/v1/volumes/copy").body
    assert volume["source_image"]["name"] == TINY_IMAGE_NAME and volume["size_gb"] == 2
    files = list((e2e_config.images_dir / "iaas-volumes").glob("*.qcow2"))
    assert len(files) == 1
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(files[0])],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info and info["virtual-size"] == 2 * 1024 ** 3
    compare = subprocess.run(["qemu-img", "compare", "-U",
                              str(e2e_config.images_dir / "tiny-linux.qcow2"), str(files[0])],
                             capture_output=True, text=True, check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    done(client, client.delete("/v1/volumes/copy"))


def test_a_stopped_vms_disk_snapshots_reverts_and_becomes_an_image(
        tiny: HttpClient, e2e_app: App, e2e_config: Config) -> None:
    client = tiny
    vm = running_vm(client, f"s-{secrets.token_hex(3)}")
    refused = client.post(f"/v1/vms/{vm['id']}/snapshots", {"name": "early"})
    assert refused.status == 409 and refused.error_code == "vm_not_stopped"
    done(client, client.post(f"/v1/vms/{vm['id']}/stop", {}))
    done(client, client.post(f"/v1/vms/{vm['id']}/snapshots", {"name": "clean"}))
    folder = e2e_config.instances_dir / vm["id"]
    top = root_disk(e2e_app, vm)
    assert top.parent == folder and top.name != "disk.qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", str(top)],
                   check=True, capture_output=True)
    changed = subprocess.run(["qemu-img", "compare", "-U", str(folder / "disk.qcow2"), str(top)],
                             capture_output=True, text=True, check=False)
    assert changed.returncode == 1, changed.stdout
    done(client, client.post(f"/v1/vms/{vm['id']}/revert", {"snapshot": "clean"}))
    reverted = root_disk(e2e_app, vm)
    same = subprocess.run(["qemu-img", "compare", "-U", str(folder / "disk.qcow2"),
                           str(reverted)], capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stdout + same.stderr
    assert not top.exists(), "the written-over top went with the revert"

    reply = client.post(f"/v1/vms/{vm['id']}/image", {"name": "from-vm"})
    assert reply.status == 202 and reply.body["status"] == "importing"
    assert client.wait_task(reply.body["task_id"], 120)["status"] == "succeeded"
    image = client.get("/v1/images/from-vm").body
    assert image["status"] == "active" and image["visibility"] == "private"
    path = e2e_config.images_dir / image["file"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info
    assert subprocess.run(["qemu-img", "compare", "-U", str(folder / "disk.qcow2"), str(path)],
                          capture_output=True, check=False).returncode == 0
    again = client.post("/v1/vms", {"name": f"i-{secrets.token_hex(3)}", "cpu": 1, "ram": 256,
                                    "image_name": "from-vm"})
    done(client, again)
    ready(e2e_config, client.get(f"/v1/vms/{again.body['id']}").body)
    done(client, client.delete(f"/v1/vms/{again.body['id']}"))
    done(client, client.delete(f"/v1/vms/{vm['id']}"))
    assert not folder.exists()


def root_disk(app: App, vm: dict[str, Any]) -> Path:
    """The file the VM's domain boots now (its vda)."""
    xml = app.hosts.get("local").hypervisor.domain_xml(vm["id"])
    source = ET.fromstring(xml).find("./devices/disk/target[@dev='vda']/../source")
    assert source is not None
    return Path(str(source.get("file")))


def test_a_disk_detached_behind_the_apis_back_turns_its_volume_to_error(
        tiny: HttpClient, e2e_app: App, system_conn: libvirt.virConnect) -> None:
    client = tiny
    done(client, client.post("/v1/volumes", {"name": "watched", "size_gb": 1}))
    volume = client.get("/v1/volumes/watched").body
    vm = running_vm(client, f"w-{secrets.token_hex(3)}")
    done(client, client.post(f"/v1/vms/{vm['id']}/stop", {}))
    attach(client, vm, volume)  # to the stopped VM: in its definition, from its next start
    domain = system_conn.lookupByUUIDString(vm["id"])
    assert serial(volume) in domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    e2e_app.reconciler.sweep()
    assert client.get("/v1/volumes/watched").body["status"] == "in-use"
    domain.detachDeviceFlags("<disk type='file' device='disk'><target dev='vdc' bus='virtio'/>"
                             "</disk>", libvirt.VIR_DOMAIN_AFFECT_CONFIG)  # an operator's virsh
    e2e_app.reconciler.sweep()
    broken = client.get("/v1/volumes/watched").body
    assert broken["status"] == "error", broken
    assert broken["error"]["code"] == "volume_detached_outside" and broken["attachments"] == []
    assert client.get(f"/v1/vms/{vm['id']}").body["volumes"] == []
    done(client, client.delete(f"/v1/vms/{vm['id']}"))
    done(client, client.delete("/v1/volumes/watched"))


def test_a_volume_grows_and_a_stopped_vm_has_its_volume_at_the_next_start(
        tiny: HttpClient, e2e_config: Config) -> None:
    client = tiny
    done(client, client.post("/v1/volumes", {"name": "grows", "size_gb": 1}))
    done(client, client.post("/v1/volumes/grows/resize", {"size_gb": 3}))
    volume = client.get("/v1/volumes/grows").body
    assert volume["size_gb"] == 3 and volume["status"] == "available"
    files = list((e2e_config.images_dir / "iaas-volumes").glob(f"*{volume['id']}*.qcow2"))
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(files[0])],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 3 * 1024 ** 3
    vm = running_vm(client, f"n-{secrets.token_hex(3)}")
    done(client, client.post(f"/v1/vms/{vm['id']}/stop", {}))
    attach(client, vm, volume)  # stopped: into its definition only
    done(client, client.post(f"/v1/vms/{vm['id']}/start", {}))
    # The console log is rewritten at each start: this boot's lines only.
    _device, ro, data = seen_after(e2e_config, vm, volume, 0)
    assert (ro, data) == ("0", "-")
    done(client, client.delete(f"/v1/vms/{vm['id']}"))
    done(client, client.delete("/v1/volumes/grows"))


def test_a_guest_that_does_not_let_go_keeps_its_volume(
        make_e2e_app: E2eAppFactory, e2e_config: Config) -> None:
    app = make_e2e_app(replace(e2e_config, detach_timeout_s=2))
    with served(app) as client:
        register_tiny_image(client)
        done(client, client.post("/v1/volumes", {"name": "held", "size_gb": 1}))
        volume = client.get("/v1/volumes/held").body
        vm = running_vm(client, f"h-{secrets.token_hex(3)}")
        ready(e2e_config, vm)
        attach(client, vm, volume)
        done(client, client.post(f"/v1/vms/{vm['id']}/pause", {}))  # a guest that cannot answer
        reply = client.delete(f"/v1/vms/{vm['id']}/volumes/{volume['id']}")
        assert reply.status == 202
        ended = client.wait_task(reply.body["id"], 60)
        assert ended["status"] == "failed" and ended["error"]["code"] == "detach_timeout", ended
        shown = client.get("/v1/volumes/held").body
        assert shown["status"] == "in-use"
        assert [(a["vm_id"], a["status"]) for a in shown["attachments"]] == [(vm["id"],
                                                                              "attached")]
        assert serial(volume) in app.hosts.get("local").hypervisor.domain_xml(vm["id"])
        done(client, client.post(f"/v1/vms/{vm['id']}/resume", {}))
        detach(client, vm, volume)  # once it runs again it lets go
        assert client.get("/v1/volumes/held").body["attachments"] == []
        done(client, client.delete(f"/v1/vms/{vm['id']}"))
        done(client, client.delete("/v1/volumes/held"))
