"""Keypairs: a project keeps SSH public keys by name (fingerprint as ssh-keygen prints it) and
puts them in VMs with key_names beside ssh_keys; another project's keypairs are not there."""
from __future__ import annotations

import email
import subprocess
from pathlib import Path

import pytest
import yaml

from src.app import App
from src.config import Config
from tests.integration.test_cloud_init import KEY, read_seed
from tests.support import Client


def generated_key(tmp_path: Path, name: str) -> tuple[str, str]:
    """(public key line, fingerprint as `ssh-keygen -lf` prints it) of a fresh key."""
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                   check=True)
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True,
                            capture_output=True, text=True).stdout.split()
    return Path(f"{path}.pub").read_text(), listed[1]


@pytest.fixture
def alpha(app: App) -> Client:
    return Client(app, token=app.tokens.issue("alpha", "member")[1])


def test_keypairs_are_kept_listed_shown_and_deleted(alpha: Client, client: Client,
                                                    tmp_path: Path) -> None:
    public_key, fingerprint = generated_key(tmp_path, "laptop")
    reply = alpha.post("/v1/keypairs", {"name": "laptop", "public_key": public_key})
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == "/v1/keypairs/laptop"
    assert reply.body["fingerprint"] == fingerprint and fingerprint.startswith("SHA256:")
    assert reply.body["public_key"] == public_key.strip() and reply.body["project"] == "alpha"
    assert alpha.get("/v1/keypairs").body["keypairs"] == [reply.body]
    assert alpha.get("/v1/keypairs/laptop").body == reply.body
    clash = alpha.post("/v1/keypairs", {"name": "laptop", "public_key": public_key})
    assert clash.status == 409 and clash.error_code == "name_conflict"
    assert client.get("/v1/keypairs").body["keypairs"] == [reply.body]  # admins: every project
    assert client.get("/v1/keypairs/laptop").error_code == "keypair_not_found"  # not default's
    assert client.get("/v1/keypairs/laptop?project=alpha").body == reply.body
    assert alpha.delete("/v1/keypairs/laptop").status == 204
    assert alpha.get("/v1/keypairs/laptop").status == 404


def test_bad_keys_are_refused(alpha: Client) -> None:
    for key in ("ssh-ed25519 not-base64", "ssh-dss AAAAB3NzaC1kc3M= x", KEY + "\nssh-rsa AAAA"):
        reply = alpha.post("/v1/keypairs", {"name": "bad", "public_key": key})
        assert reply.status == 400 and reply.error_code == "validation_failed", key
        assert reply.body["error"]["details"]["errors"][0]["field"] == "public_key"
    assert alpha.get("/v1/keypairs").body["keypairs"] == []


def test_another_projects_keypairs_are_not_there(app: App, alpha: Client,
                                                 tmp_path: Path, base_image: dict) -> None:
    beta = Client(app, token=app.tokens.issue("beta", "member")[1])
    public_key, _ = generated_key(tmp_path, "theirs")
    assert beta.post("/v1/keypairs", {"name": "theirs", "public_key": public_key}).status == 201
    assert alpha.get("/v1/keypairs").body["keypairs"] == []
    assert alpha.get("/v1/keypairs/theirs").error_code == "keypair_not_found"
    assert alpha.get("/v1/keypairs/theirs?project=beta").error_code == "keypair_not_found"
    assert alpha.delete("/v1/keypairs/theirs?project=beta").status == 404
    reply = alpha.post("/v1/vms", {"name": "vm", "cpu": 1, "ram": 128, "image_name": "base",
                                   "key_names": ["theirs"]})
    assert reply.status == 400 and reply.error_code == "keypair_not_found"
    assert reply.body["error"]["details"] == {"keypair": "theirs"}
    assert alpha.get("/v1/vms").body["vms"] == []


def test_key_names_and_ssh_keys_both_reach_the_seed(alpha: Client, config: Config,
                                                    tmp_path: Path, base_image: dict) -> None:
    laptop, _ = generated_key(tmp_path, "laptop")
    desk, _ = generated_key(tmp_path, "desk")
    for name, key in (("laptop", laptop), ("desk", desk)):
        assert alpha.post("/v1/keypairs", {"name": name, "public_key": key}).status == 201
    reply = alpha.post("/v1/vms", {"name": "keyed", "cpu": 1, "ram": 128, "image_name": "base",
                                   "ssh_keys": [KEY], "key_names": ["desk", "laptop"]})
    assert reply.status == 202, reply.body
    assert alpha.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    files = read_seed(config.instances_dir / reply.body["id"] / "seed.iso")
    parts = [part for part in email.message_from_bytes(files["user-data"]).walk()
             if not part.is_multipart()]
    platform = yaml.safe_load(parts[0].get_payload(decode=True))
    assert platform["ssh_authorized_keys"] == [KEY, desk.strip(), laptop.strip()]
