"""Flavors: CRUD, seeding, and VMs sized by a flavor instead of cpu/ram."""
from __future__ import annotations

from typing import Any

from src import cli
from src.app import App
from src.config import Config
from tests.support import Client

SMALL = {"name": "t.small", "cpu": 2, "ram": 2048, "disk_gb": 3}


def test_flavor_crud_and_defaults(client: Client) -> None:
    reply = client.post("/v1/flavors", SMALL)
    assert reply.status == 201 and reply.headers["Location"] == f"/v1/flavors/{reply.body['id']}"
    assert reply.body["gpu_count"] == 0 and reply.body["gpu_model"] is None
    assert not (reply.body["hugepages"] or reply.body["cpu_pinning"] or reply.body["numa_aligned"])
    assert client.get("/v1/flavors/t.small").body == reply.body
    assert client.post("/v1/flavors", SMALL).error_code == "name_conflict"
    assert [f["name"] for f in client.get("/v1/flavors").body["flavors"]] == ["t.small"]
    assert client.delete("/v1/flavors/t.small").status == 204
    assert client.get("/v1/flavors/t.small").error_code == "flavor_not_found"
    assert client.delete("/v1/flavors/t.small").status == 404


def test_bad_flavors_are_refused_and_change_nothing(client: Client) -> None:
    for bad in ({**SMALL, "cpu": 0}, {**SMALL, "gpu_count": -1}, {**SMALL, "hugepages": "yes"},
                {**SMALL, "gpu_model": "<x/>"}, {**SMALL, "host": "a"},
                {k: v for k, v in SMALL.items() if k != "disk_gb"}):
        reply = client.post("/v1/flavors", bad)
        assert reply.status == 400 and reply.error_code == "validation_failed", bad
    assert client.get("/v1/flavors").body["flavors"] == []


def create(client: Client, body: dict[str, Any]) -> Any:
    return client.post("/v1/vms", {"name": "sized", "image_name": "base", **body})


def test_vm_from_a_flavor(client: Client, base_image: dict) -> None:
    client.post("/v1/flavors", SMALL)
    reply = create(client, {"flavor": "t.small"})
    assert reply.status == 202, reply.body
    vm = reply.body
    assert (vm["cpu"], vm["ram"], vm["disk_gb"], vm["flavor"]) == (2, 2048, 3, "t.small")
    assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    assert client.get("/v1/vms/sized").body["flavor"] == "t.small"


def test_flavor_xor_cpu_and_ram(client: Client, base_image: dict) -> None:
    client.post("/v1/flavors", SMALL)
    for body in ({"flavor": "t.small", "cpu": 1}, {"flavor": "t.small", "cpu": 1, "ram": 256},
                 {}, {"cpu": 1}, {"ram": 256}):
        reply = create(client, body)
        assert reply.status == 400 and reply.error_code == "validation_failed", body
    reply = create(client, {"flavor": "nope"})
    assert reply.status == 400 and reply.error_code == "flavor_not_found"
    assert client.get("/v1/vms").body["vms"] == []


def test_gpu_flavor_is_refused_at_request_time(client: Client, base_image: dict) -> None:
    client.post("/v1/flavors", {**SMALL, "name": "t.gpu", "gpu_count": 2, "gpu_model": "H100"})
    reply = create(client, {"flavor": "t.gpu"})
    assert reply.status == 409 and reply.error_code == "insufficient_capacity"
    assert reply.body["error"]["details"] == {"resource": "gpu", "requested": 2, "available": 0,
                                              "hosts": {"gpu": 1}}
    assert client.get("/v1/vms").body["vms"] == []


def test_db_init_seeds_flavors_once(config: Config, app: App, client: Client) -> None:
    cli.db_init(config)
    cli.db_init(config)
    names = [f["name"] for f in client.get("/v1/flavors").body["flavors"]]
    assert {"cpu.small", "cpu.medium", "cpu.large", "gpu.1x", "gpu.h100x2"} == set(names)
    assert len(names) == 5
    assert client.get("/v1/flavors/gpu.h100x2").body["gpu_model"] == "H100"
