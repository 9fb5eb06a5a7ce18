"""cloud-init through the API: keys and user-data reach the NoCloud seed unchanged, bad input is
refused before anything exists, and nothing a user sends can reshape meta-data or the XML."""
from __future__ import annotations

import email
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from src.app import App
from src.config import Config
from tests.support import Client

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "ml@workstation")
SCRIPT = "#!/bin/sh\necho 'instance-id: evil' > /tmp/x\n--MIME-BOUNDARY--\n"


def read_seed(path: Path) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        files = {}
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        return files
    finally:
        iso.close()


def create(client: Client, **fields: Any) -> Any:
    return client.post("/v1/vms", {"name": "ml-01", "cpu": 1, "ram": 256, "image_name": "base",
                                   **fields})


def test_keys_and_user_data_reach_the_seed(app: App, client: Client, config: Config,
                                           base_image: dict) -> None:
    reply = create(client, ssh_keys=[KEY + " \n"], user_data=SCRIPT)
    assert reply.status == 202, reply.body
    vm = reply.body
    assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    seed = config.instances_dir / vm["id"] / "seed.iso"
    files = read_seed(seed)
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": vm["id"], "local-hostname": "ml-01"}
    archive = email.message_from_bytes(files["user-data"])
    parts = [part for part in archive.walk() if not part.is_multipart()]
    assert [part.get_content_type() for part in parts] == ["text/cloud-config",
                                                           "text/x-shellscript"]
    platform = yaml.safe_load(parts[0].get_payload(decode=True))
    assert platform["ssh_authorized_keys"] == [KEY] and platform["hostname"] == "ml-01"
    assert parts[1].get_payload(decode=True) == SCRIPT.encode()  # byte for byte
    domain = ET.fromstring(app.hypervisor.domain_xml(vm["id"]))
    disk = domain.findall("./devices/disk")[1]
    assert disk.find("source").get("file") == str(seed)
    assert (disk.get("device"), disk.find("target").get("bus")) == ("disk", "virtio")
    assert disk.find("readonly") is not None
    delete = client.delete(f"/v1/vms/{vm['id']}").body
    assert client.wait_task(delete["id"])["status"] == "succeeded"
    assert not seed.exists()


def test_without_keys_the_seed_still_names_the_host(client: Client, config: Config,
                                                    base_image: dict) -> None:
    vm = create(client).body
    client.wait_task(vm["task"]["id"])
    files = read_seed(config.instances_dir / vm["id"] / "seed.iso")
    assert files["user-data"].startswith(b"#cloud-config\n")
    assert yaml.safe_load(files["user-data"])["hostname"] == "ml-01"
    assert vm["id"].encode() in files["meta-data"]


@pytest.mark.parametrize("fields, field", [
    ({"ssh_keys": ["ssh-ed25519 AAAA\n  - ssh-rsa evil"]}, "ssh_keys[0]"),
    ({"ssh_keys": [KEY, "not a key"]}, "ssh_keys[1]"),
    ({"ssh_keys": [KEY.replace("ml@", "ml\n@")]}, "ssh_keys[0]"),
    ({"ssh_keys": ["ssh-rsa " + KEY.split()[1]]}, "ssh_keys[0]"),  # blob says ed25519
    ({"ssh_keys": [""]}, "ssh_keys.0"),
    ({"ssh_keys": KEY}, "ssh_keys"),
    ({"user_data": "é" * 9000}, "user_data"),  # 9,000 characters, 18,000 bytes
    ({"user_data": "x" * 16385}, "user_data"),
    ({"user_data": 7}, "user_data"),
])
def test_bad_keys_and_user_data_are_refused_and_change_nothing(
        client: Client, config: Config, base_image: dict, fields: dict[str, Any],
        field: str) -> None:
    reply = create(client, **fields)
    assert reply.status == 400 and reply.error_code == "validation_failed", reply.body
    assert field in str(reply.body["error"]["details"])
    assert client.get("/v1/vms").body["vms"] == []
    assert not config.instances_dir.exists() or not any(config.instances_dir.iterdir())


def test_user_data_cannot_touch_meta_data_or_the_xml(app: App, client: Client, config: Config,
                                                     base_image: dict) -> None:
    payload = ("instance-id: evil\nlocal-hostname: evil\n</source><hostdev/>"
               "Content-Type: text/x-shellscript\n\n--===============0==\n")
    vm = create(client, user_data=payload).body
    client.wait_task(vm["task"]["id"])
    files = read_seed(config.instances_dir / vm["id"] / "seed.iso")
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": vm["id"], "local-hostname": "ml-01"}
    parts = [p for p in email.message_from_bytes(files["user-data"]).walk()
             if not p.is_multipart()]
    assert len(parts) == 2 and parts[1].get_payload(decode=True) == payload.encode()
    domain = ET.fromstring(app.hypervisor.domain_xml(vm["id"]))
    assert domain.find(".//hostdev") is None and "evil" not in ET.tostring(domain).decode()
