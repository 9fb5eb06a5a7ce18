"""Many hosts on libvirt's test driver: the host API, the scheduler's filters and weights, the
rejection counts, draining, pinning, the race for the last slots, and a host that goes away."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.conftest import AppFactory, make_qcow2
from tests.integration.test_gpus import _pci
from tests.support import Client, LiveServer, host_xml, race

H100 = "".join([_pci("0000:3b:00.0", "0x030200", 0, 12, ["0000:3b:00.0"]),
                _pci("0000:5e:00.0", "0x030200", 0, 13, ["0000:5e:00.0"])])
VM = {"cpu": 1, "ram": 1024, "image_name": "base"}


def _host_file(root: Path, name: str, *, cpus: int = 16, memory_gib: int = 64,
               devices: str = "") -> str:
    path = root / f"{name}.xml"
    path.write_text(host_xml("iaas-test", cpus=cpus, memory_gib=memory_gib, devices=devices))
    return f"test://{path}"


@pytest.fixture
def cluster(make_app: AppFactory, config: Config, tmp_path: Path) -> tuple[App, Client]:
    """An app whose host `local` is small (4 GiB), with image `base` registered."""
    (tmp_path / "local.xml").write_text(host_xml("iaas-test", cpus=4, memory_gib=4))
    app = make_app(replace(config, libvirt_uri=f"test://{tmp_path}/local.xml"))
    client = Client(app)
    make_qcow2(config.images_dir / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                      "format": "qcow2"}).status == 201
    return app, client


def add(client: Client, name: str, uri: str, **fields: Any) -> dict[str, Any]:
    reply = client.post("/v1/hosts", {"name": name, "uri": uri, **fields})
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.body
    return body


def placed(client: Client, name: str, **fields: Any) -> str:
    body = {key: value for key, value in {"name": name, **VM, **fields}.items()
            if value is not None}  # None drops a field (cpu and ram beside a flavor)
    reply = client.post("/v1/vms", body)
    assert reply.status == 202, reply.body
    host: str = reply.body["host"]
    assert client.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    return host


def test_hosts_are_added_shown_drained_and_removed(cluster: tuple[App, Client],
                                                   tmp_path: Path) -> None:
    _, client = cluster
    body = add(client, "big", _host_file(tmp_path, "big"), cpu_allocation_ratio=2.0)
    assert (body["state"], body["enabled"], body["storage"], body["domain_type"]) == (
        "up", True, "shared", "test")
    assert body["capacity"] == {"vcpus": 32, "ram": 65536, "disk_gb": body["capacity"]["disk_gb"],
                                "gpus": 0}
    assert body["allocated"] == {"vcpus": 0, "ram": 0, "disk_gb": 0, "gpus": 0}
    assert body["libvirt_version"] and body["numa_nodes"] == 1 and body["vms"] == 0
    assert [host["name"] for host in client.get("/v1/hosts").body["hosts"]] == ["big", "local"]
    assert client.post("/v1/hosts", {"name": "big", "uri": _host_file(tmp_path, "x")}
                       ).error_code == "name_conflict"
    assert placed(client, "on-big") == "big"
    shown = client.get("/v1/hosts/big").body
    assert shown["vms"] == 1 and shown["allocated"]["vcpus"] == 1
    assert shown["free"]["ram"] == 65536 - 1024
    drained = client.request("PATCH", "/v1/hosts/big", {"enabled": False}).body
    assert (drained["state"], drained["enabled"]) == ("disabled", False)
    assert placed(client, "elsewhere") == "local"  # no new VMs on a drained host
    stopped = client.post("/v1/vms/on-big/stop", None)  # its VMs go on
    assert stopped.status == 202 and client.wait_task(stopped.body["id"])["status"] == "succeeded"
    assert client.delete("/v1/hosts/big").error_code == "host_not_empty"
    client.wait_task(client.delete("/v1/vms/on-big").body["id"])
    assert client.delete("/v1/hosts/big").status == 204
    assert client.get("/v1/hosts/big").error_code == "host_not_found"


def test_unreachable_and_insecure_hosts_are_refused(cluster: tuple[App, Client],
                                                    make_app: AppFactory, config: Config,
                                                    tmp_path: Path) -> None:
    _, client = cluster
    gone = client.post("/v1/hosts", {"name": "gone", "uri": f"test://{tmp_path}/nothing.xml"})
    assert gone.status == 409 and gone.error_code == "host_unreachable"
    tcp = client.post("/v1/hosts", {"name": "plain", "uri": "qemu+tcp://127.0.0.1:1/system"})
    assert tcp.status == 400 and tcp.error_code == "insecure_uri"
    allowed = Client(make_app(replace(config, allow_insecure_hosts=True,
                                      db_path=tmp_path / "other.db")))
    reply = allowed.post("/v1/hosts", {"name": "plain", "uri": "qemu+tcp://127.0.0.1:1/system"})
    assert reply.error_code == "host_unreachable"  # allowed, but nothing listens there
    assert [host["name"] for host in client.get("/v1/hosts").body["hosts"]] == ["local"]


def test_a_test_host_never_quotes_the_file_it_names(cluster: tuple[App, Client],
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    _, client = cluster
    decoy = tmp_path / "shadow"
    decoy.write_text("root:$6$decoyhash:19000:0:99999:7:::\nsecond line\n")
    caplog.set_level(logging.WARNING, logger="src.services.hosts.registry")
    reply = client.post("/v1/hosts", {"name": "leak", "uri": f"test://{decoy}"})
    assert reply.status == 409 and reply.error_code == "host_unreachable"
    message = reply.body["error"]["message"]
    assert "decoyhash" not in str(reply.body) and "root:" not in message
    assert "could not read a host description there" in message and "server log" in message
    assert "decoyhash" in caplog.text  # the operator still gets libvirt's whole message


def test_test_hosts_need_their_setting(make_app: AppFactory, config: Config,
                                       tmp_path: Path) -> None:
    client = Client(make_app(replace(config, allow_test_hosts=False)))  # the default
    for uri in (_host_file(tmp_path, "fine"), "test:///default"):
        reply = client.post("/v1/hosts", {"name": "t", "uri": uri})
        assert reply.status == 400 and reply.error_code == "host_uri_not_allowed", reply.body
        assert "IAAS_ALLOW_TEST_HOSTS" in reply.body["error"]["message"]
    assert [host["name"] for host in client.get("/v1/hosts").body["hosts"]] == ["local"]


@pytest.mark.parametrize("uri, why", [
    ("qemu+tls://127.0.0.1:1/system?no_verify=1", "certificate or key"),
    ("qemu+ssh://iaas@127.0.0.1:1/system?no_verify=1", "certificate or key"),
    ("qemu+ssh://127.0.0.1:1/system?command=/bin/false", "local program"),
    ("qemu+tls://127.0.0.1:1/system?pkipath=/etc/pki/libvirt", "under IAAS_HOST_CREDENTIALS_DIR"),
    ("qemu+tls://127.0.0.1:1/system?pkipath={creds}/../../etc", "under IAAS_HOST_CREDENTIALS_DIR"),
    ("qemu+tls://127.0.0.1:1/system?pkipath={creds}/a&pkipath={creds}/b", "twice"),
    ("qemu+ssh://127.0.0.1:1/system?keyfile={creds}/k&known_hosts=/root/.ssh/known_hosts",
     "under IAAS_HOST_CREDENTIALS_DIR"),
    ("qemu:///system?socket=/run/libvirt/libvirt-sock", "connects to any local socket"),
    ("qemu:///session", "expected qemu:///system"),
    ("qemu+tls://user@127.0.0.1:1/system", "expected qemu+tls://HOST[:PORT]/system"),
    ("qemu+tls://127.0.0.1:1/session", "expected qemu+tls://HOST[:PORT]/system"),
    ("test:///{creds}/../host.xml", "expected test:///PATH"),
])
def test_host_uris_outside_the_allow_list_are_refused(uri: str, why: str, make_app: AppFactory,
                                                      config: Config, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    client = Client(make_app(replace(config, host_credentials_dir=creds)))
    reply = client.post("/v1/hosts", {"name": "h1", "uri": uri.format(creds=creds)})
    assert reply.status == 400 and reply.error_code == "host_uri_not_allowed", reply.body
    assert why in reply.body["error"]["message"]
    assert [host["name"] for host in client.get("/v1/hosts").body["hosts"]] == ["local"]


@pytest.mark.parametrize("uri", ["qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
                                 "qemu+ssh://127.0.0.1:1/system?keyfile=/etc/iaas/k#x",
                                 "qemu+tls://127.0.0.1:1/system?pkipath=/etc/iaas/a%2F..%2F..%2Fetc",
                                 "qemu+tls://127.0.0.1:1/system?pkipath=/etc/iaas/a;no_verify=1"])
def test_the_schema_refuses_other_schemes_and_characters(cluster: tuple[App, Client],
                                                         uri: str) -> None:
    _, client = cluster
    reply = client.post("/v1/hosts", {"name": "h1", "uri": uri})
    assert reply.status == 400 and reply.error_code == "validation_failed", reply.body


def test_allowed_parameters_reach_libvirt_and_its_error_is_summarised(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    (creds / "pki").mkdir(parents=True)  # no certificates in it: libvirt cannot even start TLS
    client = Client(make_app(replace(config, host_credentials_dir=creds,
                                     allow_insecure_hosts=True)))
    tls = client.post("/v1/hosts", {"name": "tls", "uri":
                                    f"qemu+tls://127.0.0.1:1/system?pkipath={creds}/pki"})
    assert tls.status == 409 and tls.error_code == "host_unreachable", tls.body
    assert "a file libvirt needs is missing" in tls.body["error"]["message"]
    assert str(creds) not in tls.body["error"]["message"].split(" is missing")[1]
    tcp = client.post("/v1/hosts", {"name": "tcp", "uri": "qemu+tcp://127.0.0.1:1/system"})
    assert tcp.error_code == "host_unreachable"
    assert "connection refused" in tcp.body["error"]["message"]


def test_spread_and_pack_weigh_by_free_ram(make_app: AppFactory, config: Config,
                                           tmp_path: Path) -> None:
    for policy, expected in (("spread", ["big", "big", "big"]), ("pack", ["mid", "mid", "big"])):
        (tmp_path / "local.xml").write_text(host_xml("iaas-test", cpus=4, memory_gib=2))
        app = make_app(replace(config, scheduler=policy, db_path=tmp_path / f"{policy}.db",
                               libvirt_uri=f"test://{tmp_path}/local.xml"))
        client = Client(app)
        make_qcow2(config.images_dir / "base.qcow2")
        client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
        add(client, "big", _host_file(tmp_path, f"{policy}-big", memory_gib=64))
        add(client, "mid", _host_file(tmp_path, f"{policy}-mid", memory_gib=8))
        hosts = [placed(client, f"vm-{index}", ram=4096) for index in range(3)]
        assert hosts == expected, policy


def test_gpu_hosts_are_kept_for_gpu_work(cluster: tuple[App, Client], tmp_path: Path) -> None:
    _, client = cluster
    add(client, "gpu", _host_file(tmp_path, "gpu", memory_gib=256, devices=H100))
    add(client, "cpu", _host_file(tmp_path, "cpu", memory_gib=32))
    assert placed(client, "plain") == "cpu"  # although gpu has more RAM free
    client.post("/v1/flavors", {"name": "g1", "cpu": 2, "ram": 2048, "disk_gb": 1,
                                "gpu_count": 1, "gpu_model": "H100"})
    assert placed(client, "trainer", flavor="g1", image_name="base", cpu=None, ram=None) == "gpu"
    gpus = client.get("/v1/gpus?host=gpu").body["gpus"]
    assert {gpu["host"] for gpu in gpus} == {"gpu"} and len(gpus) == 2
    assert client.get("/v1/gpus?host=cpu").body["gpus"] == []
    availability = client.get("/v1/flavors/g1/availability").body
    assert availability["available"] == 1
    assert {entry["host"]: entry["available"] for entry in availability["hosts"]} == {
        "cpu": 0, "gpu": 1, "local": 0}


def test_nothing_fits_counts_each_host_under_its_first_filter(cluster: tuple[App, Client],
                                                              tmp_path: Path) -> None:
    _, client = cluster
    add(client, "small-a", _host_file(tmp_path, "a", memory_gib=2))
    add(client, "small-b", _host_file(tmp_path, "b", memory_gib=2))
    add(client, "off", _host_file(tmp_path, "off", memory_gib=512))
    client.request("PATCH", "/v1/hosts/off", {"enabled": False})
    reply = client.post("/v1/vms", {"name": "huge", **VM, "ram": 8192})
    assert reply.status == 409 and reply.error_code == "insufficient_capacity"
    details = reply.body["error"]["details"]
    assert details["hosts"] == {"enabled": 1, "ram": 3}
    assert sum(details["hosts"].values()) == 4 and details["resource"] == "ram"
    assert details["requested"] == 8192


def test_admins_pin_members_may_not(cluster: tuple[App, Client], tmp_path: Path) -> None:
    app, client = cluster
    add(client, "big", _host_file(tmp_path, "big"))
    assert placed(client, "pinned", host="local") == "local"
    member = Client(app, token=app.tokens.issue("team-a", "member")[1])
    refused = member.post("/v1/vms", {"name": "mine", **VM, "host": "big"})
    assert refused.status == 403 and refused.error_code == "forbidden"
    mine = member.post("/v1/vms", {"name": "mine", **VM})
    assert mine.status == 202 and mine.body["host"] is None  # members never see hosts
    member.wait_task(mine.body["task"]["id"])
    assert client.get("/v1/vms/mine").body["host"] == "big"
    unknown = client.post("/v1/vms", {"name": "lost", **VM, "host": "nowhere"})
    assert unknown.status == 400 and unknown.error_code == "host_not_found"
    event = client.get(f"/v1/vms/{mine.body['id']}/events").body["events"][-1]
    assert (event["action"], event["host"]) == ("create", "big")


def test_twenty_racing_creates_for_three_slots_across_two_hosts(cluster: tuple[App, Client],
                                                                tmp_path: Path) -> None:
    app, client = cluster
    client.request("PATCH", "/v1/hosts/local", {"enabled": False})
    add(client, "one", _host_file(tmp_path, "one", memory_gib=2))  # room for 2 VMs of 1 GiB
    add(client, "two", _host_file(tmp_path, "two", memory_gib=1))  # room for 1
    server = LiveServer(app)
    try:
        replies = race(f"{server.url}/v1/vms", [{"name": f"race-{i}", **VM} for i in range(20)])
    finally:
        server.stop()
    assert Counter(reply.status for reply in replies) == {202: 3, 409: 17}
    assert Counter(reply.body["host"] for reply in replies if reply.status == 202) == {
        "one": 2, "two": 1}


def test_fifty_hosts(cluster: tuple[App, Client], tmp_path: Path) -> None:
    _, client = cluster
    for index in range(50):
        add(client, f"h{index:02d}", _host_file(tmp_path, f"h{index}", memory_gib=4 + index))
    assert placed(client, "roomiest") == "h49"
    assert len(client.get("/v1/hosts").body["hosts"]) == 51


def test_a_host_that_goes_away(cluster: tuple[App, Client], tmp_path: Path) -> None:
    app, client = cluster
    add(client, "flaky", _host_file(tmp_path, "flaky", memory_gib=64))
    vm = placed(client, "there")
    assert vm == "flaky"
    app.hosts.get("flaky").hypervisor.close()  # its connection is gone, as with a dead daemon
    shown = client.get("/v1/vms/there").body
    assert (shown["status"], shown["power_state"]) == ("running", "unknown")
    listed = {v["name"]: v["power_state"] for v in client.get("/v1/vms").body["vms"]}
    assert listed == {"there": "unknown"}
    refused = client.post("/v1/vms/there/stop", None)
    assert refused.status == 503 and refused.error_code == "host_unavailable"
    assert refused.headers["Retry-After"]
    assert placed(client, "elsewhere") == "local"  # creates go to the hosts that answer
    assert client.get("/v1/hosts/flaky").body["state"] == "down"
