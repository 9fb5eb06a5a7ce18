"""A real guest from an uploaded image: the tiny image goes up over HTTP (streamed, checked
against its SHA-256), a keypair is kept, and a VM on qemu:///system boots from the upload with
the keypair in its seed."""
from __future__ import annotations

import hashlib
import re
import secrets
import time

from scripts.harness.host import require_tiny_image
from scripts.harness.uploads import put_file
from src.app import App
from src.config import Config
from tests.e2e.conftest import served
from tests.e2e.test_boot import BOOT_DEADLINE_S, LEASE, SSH_KEY, wait_for_console
from tests.support import SERVER_TOKENS


def test_a_vm_boots_from_an_uploaded_image_with_a_keypair(e2e_app: App,
                                                          e2e_config: Config) -> None:
    source = require_tiny_image()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with served(e2e_app) as client:
        image = client.post("/v1/images", {"name": "uploaded-tiny", "format": "qcow2",
                                           "sha256": digest}).body
        reply = put_file(client.base_url, SERVER_TOKENS[client.base_url], image["id"],
                         source)
        assert reply.status == 200, reply.body
        assert reply.body["status"] == "active" and reply.body["sha256"] == digest
        stored = e2e_config.images_dir / image["file"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
        assert client.post("/v1/keypairs", {"name": "laptop", "public_key": SSH_KEY}).status == 201
        name = f"e2e-up-{secrets.token_hex(3)}"
        created = client.post("/v1/vms", {"name": name, "cpu": 1, "ram": 256,
                                          "image_name": "uploaded-tiny", "key_names": ["laptop"]})
        assert created.status == 202, created.body
        task = client.wait_task(created.body["task"]["id"])
        assert task["status"] == "succeeded", task["error"]
        console = e2e_config.instances_dir / created.body["id"] / "console.log"
        deadline = time.monotonic() + BOOT_DEADLINE_S
        wait_for_console(console, "IAAS-TINY-BOOT-OK", deadline)
        wait_for_console(console, re.escape(f"IAAS-SEED-SSH-KEY {SSH_KEY}\n"), deadline)
        wait_for_console(console, LEASE.pattern, deadline)
        in_use = client.delete("/v1/images/uploaded-tiny")
        assert in_use.status == 409 and in_use.error_code == "image_in_use"
        deleted = client.delete(f"/v1/vms/{created.body['id']}")
        assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
        assert client.delete("/v1/images/uploaded-tiny").status == 204
        assert not stored.exists()

