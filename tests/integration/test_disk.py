"""Disk is a resource like the others: a per-project quota and host capacity, both at create."""
from __future__ import annotations

import shutil
from dataclasses import replace

from src.config import Config
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

GIB = 1024 ** 3
RATIO = 0.1


def _capacity_gb(config: Config) -> int:
    folder = config.instances_dir
    while not folder.exists():
        folder = folder.parent
    return int(shutil.disk_usage(folder).total // GIB * RATIO)


def _setup(make_app: AppFactory, config: Config) -> tuple[Client, Config]:
    config = replace(config, disk_allocation_ratio=RATIO)
    client = Client(make_app(config))
    make_qcow2(config.images_dir / "base.qcow2")
    client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    return client, config


def test_disk_beyond_the_instances_filesystem_is_409(make_app: AppFactory,
                                                     config: Config) -> None:
    client, config = _setup(make_app, config)
    capacity = _capacity_gb(config)
    vm = {"name": "big", "cpu": 1, "ram": 128, "image_name": "base", "disk_gb": capacity + 1}
    reply = client.post("/v1/vms", vm)
    assert reply.status == 409 and reply.error_code == "insufficient_capacity"
    assert reply.body["error"]["details"] == {"resource": "disk", "requested": capacity + 1,
                                              "available": capacity, "hosts": {"disk": 1}}
    assert client.get("/v1/vms").body["vms"] == []
    half = capacity // 2 + 1
    assert client.post("/v1/vms", {**vm, "disk_gb": half}).status == 202
    second = client.post("/v1/vms", {**vm, "name": "big2", "disk_gb": half})
    assert second.body["error"]["details"]["available"] == capacity - half


def test_availability_counts_disk(make_app: AppFactory, config: Config) -> None:
    client, config = _setup(make_app, config)
    disk = _capacity_gb(config) // 2 + 1
    client.post("/v1/flavors", {"name": "fat", "cpu": 1, "ram": 128, "disk_gb": disk})
    answer = client.get("/v1/flavors/fat/availability").body
    assert answer.pop("at")  # the moment it answers for: now
    assert answer == {
        "flavor": "fat", "available": 1, "limited_by": "disk",
        "hosts": [{"host": "local", "available": 1, "limited_by": "disk"}]}


def test_disk_quota(make_app: AppFactory, config: Config) -> None:
    client, _ = _setup(make_app, config)
    member = Client(client.app, token=client.app.tokens.issue("team-d", "member")[1])
    assert member.get("/v1/projects/team-d/quota").body["limits"]["disk_gb"] == 500
    assert client.request("PUT", "/v1/projects/team-d/quota", {"disk_gb": 5}).status == 200
    vm = {"cpu": 1, "ram": 128, "image_name": "base", "disk_gb": 3}
    assert member.post("/v1/vms", {"name": "d1", **vm}).status == 202
    refused = member.post("/v1/vms", {"name": "d2", **vm})
    assert refused.status == 403 and refused.error_code == "quota_exceeded"
    assert refused.body["error"]["details"] == {"resource": "disk_gb", "limit": 5, "in_use": 3,
                                                "requested": 3}
    assert member.get("/v1/projects/team-d/quota").body["in_use"]["disk_gb"] == 3
