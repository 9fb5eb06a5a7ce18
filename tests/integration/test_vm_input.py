"""Bad input to POST /v1/vms gets a clear 4xx and changes nothing: no row, domain or file."""
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.conftest import make_qcow2
from tests.support import Client

GOOD = {"name": "vm-ok", "cpu": 1, "ram": 256, "image_name": "base"}
INJECTIONS = ["x'/><hostdev mode='subsystem'/><x a='", "</name><devices/>", "a&b", "vm\n",
              "{{7*7}}", "vm'\"<>"]


def assert_nothing_changed(client: Client, app: App, config: Config) -> None:
    assert client.get("/v1/vms").body["vms"] == []
    assert app.hypervisor.power_states() == {}
    assert not config.instances_dir.exists() or not any(config.instances_dir.iterdir())


@pytest.mark.parametrize("change, field", [
    ({"cpu": "2"}, "cpu"), ({"cpu": True}, "cpu"), ({"cpu": 2.5}, "cpu"), ({"cpu": 0}, "cpu"),
    ({"cpu": 129}, "cpu"), ({"ram": 127}, "ram"), ({"ram": 1048577}, "ram"),
    ({"disk_gb": 0}, "disk_gb"), ({"disk_gb": 16385}, "disk_gb"), ({"name": "Bad_Name"}, "name"),
    ({"extra": 1}, "body"),
])
def test_invalid_fields_are_400_with_the_field(client: Client, app: App, config: Config,
                                               base_image: dict, change: dict, field: str) -> None:
    reply = client.post("/v1/vms", {**GOOD, **change})
    assert reply.status == 400 and reply.error_code == "validation_failed"
    assert reply.body["error"]["details"]["errors"][0]["field"] == field
    assert_nothing_changed(client, app, config)


@pytest.mark.parametrize("field", ["name", "image_name"])
@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_any_string_field_is_rejected(client: Client, app: App, config: Config,
                                                    base_image: dict, field: str,
                                                    payload: str) -> None:
    reply = client.post("/v1/vms", {**GOOD, field: payload})
    assert reply.status == 400, reply.body
    assert_nothing_changed(client, app, config)


def test_unknown_image_is_400(client: Client, app: App, config: Config, base_image: dict) -> None:
    reply = client.post("/v1/vms", {**GOOD, "image_name": "no-such-image"})
    assert reply.status == 400 and reply.error_code == "image_not_found"
    assert_nothing_changed(client, app, config)


def test_disk_smaller_than_image_is_400(client: Client, app: App, config: Config) -> None:
    make_qcow2(config.images_dir / "big.qcow2", "5G")
    client.post("/v1/images", {"name": "big", "file": "big.qcow2", "format": "qcow2"})
    reply = client.post("/v1/vms", {**GOOD, "image_name": "big", "disk_gb": 4})
    assert reply.status == 400 and reply.error_code == "disk_too_small"
    assert_nothing_changed(client, app, config)


def test_image_file_gone_is_409(client: Client, app: App, config: Config, base_image: dict) -> None:
    (config.images_dir / "base.qcow2").unlink()
    reply = client.post("/v1/vms", GOOD)
    assert reply.status == 409 and reply.error_code == "image_file_missing"
    assert_nothing_changed(client, app, config)


def test_body_that_is_not_an_object(client: Client, app: App, config: Config) -> None:
    body: Any
    for body in ([GOOD], "vm", 1, None):
        assert client.post("/v1/vms", body).status == 400
    assert_nothing_changed(client, app, config)
