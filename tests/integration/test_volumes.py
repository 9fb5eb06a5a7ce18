"""Volumes on the test driver: create (empty or from an image), list, show, delete, quotas,
names and projects. Attaching needs a real hypervisor (tests/e2e/test_volumes.py)."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.conftest import make_qcow2
from tests.support import Client, LiveServer, post, race


@pytest.fixture
def alpha(app: App) -> Client:
    return Client(app, token=app.tokens.issue("team-a", "member")[1])


@pytest.fixture
def beta(app: App) -> Client:
    return Client(app, token=app.tokens.issue("team-b", "member")[1])


def made(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    """Create a volume and wait until its task ends; the volume as it is then."""
    reply = client.post("/v1/volumes", body)
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "creating" and reply.body["task"]["action"] == "volume_create"
    task = client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "succeeded", task
    shown = client.get(f"/v1/volumes/{reply.body['id']}")
    assert shown.status == 200
    return dict(shown.body)


def test_an_empty_volume_is_made_listed_and_deleted(alpha: Client) -> None:
    volume = made(alpha, {"name": "scratch", "size_gb": 2})
    assert volume["status"] == "available" and volume["size_gb"] == 2
    assert volume["project"] == "team-a" and volume["multiattach"] is False
    assert volume["source_image"] is None and volume["attachments"] == []
    assert volume["host"] == "local"
    assert alpha.get("/v1/volumes/scratch").body["id"] == volume["id"]
    assert [v["name"] for v in alpha.get("/v1/volumes").body["volumes"]] == ["scratch"]
    deleted = alpha.delete("/v1/volumes/scratch")
    assert deleted.status == 202 and deleted.body["action"] == "volume_delete"
    assert alpha.wait_task(deleted.body["id"])["status"] == "succeeded"
    assert alpha.get("/v1/volumes/scratch").error_code == "volume_not_found"


def test_a_volume_from_an_image_must_hold_it(client: Client, config: Config,
                                            alpha: Client) -> None:
    """(The copy itself needs a pool that sees the images directory: tests/e2e.)"""
    make_qcow2(config.images_dir / "wide.qcow2", "3G")
    assert client.post("/v1/images", {"name": "wide", "file": "wide.qcow2",
                                      "format": "qcow2"}).status == 201
    small = alpha.post("/v1/volumes", {"name": "data", "size_gb": 2, "image_name": "wide"})
    assert small.status == 400 and small.error_code == "volume_too_small"
    assert small.body["error"]["details"] == {"size_gb": 2, "minimum_gb": 3}
    missing = alpha.post("/v1/volumes", {"name": "other", "size_gb": 4, "image_name": "nope"})
    assert missing.status == 400 and missing.error_code == "image_not_found"
    assert alpha.get("/v1/volumes").body["volumes"] == []


@pytest.mark.parametrize("body, field", [
    ({"name": "Bad_Name", "size_gb": 1}, "name"),
    ({"name": "ok", "size_gb": 0}, "size_gb"),
    ({"name": "ok"}, "size_gb"),
    ({"name": "ok", "size_gb": 1, "color": "red"}, "color"),
])
def test_bad_bodies_are_refused_and_make_nothing(alpha: Client, body: dict[str, Any],
                                                 field: str) -> None:
    reply = alpha.post("/v1/volumes", body)
    assert reply.status == 400 and reply.error_code == "validation_failed", reply.body
    assert field in str(reply.body["error"])
    assert alpha.get("/v1/volumes").body["volumes"] == []


def test_names_are_unique_per_project(alpha: Client, beta: Client) -> None:
    made(alpha, {"name": "shared", "size_gb": 1})
    again = alpha.post("/v1/volumes", {"name": "shared", "size_gb": 1})
    assert again.status == 409 and again.error_code == "name_conflict"
    assert made(beta, {"name": "shared", "size_gb": 1})["project"] == "team-b"


def test_another_projects_volume_does_not_exist(app: App, alpha: Client, beta: Client) -> None:
    volume = made(alpha, {"name": "secret", "size_gb": 1})
    for path in (f"/v1/volumes/{volume['id']}", "/v1/volumes/secret",
                 f"/v1/volumes/{volume['id']}/snapshots"):
        assert beta.get(path).error_code == "volume_not_found"
    assert beta.delete(f"/v1/volumes/{volume['id']}").error_code == "volume_not_found"
    assert beta.post(f"/v1/volumes/{volume['id']}/resize", {"size_gb": 5}
                     ).error_code == "volume_not_found"
    assert beta.post(f"/v1/volumes/{volume['id']}/snapshots", {"name": "s"}
                     ).error_code == "volume_not_found"
    assert beta.get("/v1/volumes").body["volumes"] == []
    admin = Client(app)
    assert admin.get(f"/v1/volumes/{volume['id']}").body["name"] == "secret"
    assert [v["name"] for v in admin.get("/v1/volumes").body["volumes"]] == ["secret"]


def test_members_may_not_pin_a_host(alpha: Client) -> None:
    reply = alpha.post("/v1/volumes", {"name": "pinned", "size_gb": 1, "host": "local"})
    assert reply.status == 403 and reply.error_code == "forbidden"


def test_ten_racing_creates_against_a_quota_of_three_give_three(app: App, alpha: Client) -> None:
    admin = Client(app)
    assert admin.request("PUT", "/v1/projects/team-a/quota", {"volumes": 3}).status == 200
    server = LiveServer(app)
    try:
        replies = race(server.url + "/v1/volumes",
                       [{"name": f"v-{i}", "size_gb": 1} for i in range(10)],
                       {"Authorization": f"Bearer {alpha.token}"})
    finally:
        server.stop()
    assert sorted(reply.status for reply in replies) == [202] * 3 + [403] * 7
    refused = next(reply for reply in replies if reply.status == 403)
    assert refused.body["error"]["details"]["resource"] == "volumes"
    assert len(alpha.get("/v1/volumes").body["volumes"]) == 3
    assert alpha.get("/v1/projects/team-a/quota").body["in_use"]["volumes"] == 3


def test_volumes_gb_counts_sizes(app: App, alpha: Client) -> None:
    quota = alpha.get("/v1/projects/team-a/quota").body
    assert quota["limits"]["volumes"] == 10 and quota["limits"]["volumes_gb"] == 1000
    Client(app).request("PUT", "/v1/projects/team-a/quota", {"volumes_gb": 5})
    made(alpha, {"name": "four", "size_gb": 4})
    over = alpha.post("/v1/volumes", {"name": "two", "size_gb": 2})
    assert over.status == 403 and over.body["error"]["details"] == {
        "resource": "volumes_gb", "limit": 5, "in_use": 4, "requested": 2}
    grow = alpha.post("/v1/volumes/four/resize", {"size_gb": 6})
    assert grow.status == 403 and grow.error_code == "quota_exceeded"
    assert alpha.get("/v1/volumes/four").body["size_gb"] == 4


def test_a_volume_never_shrinks(alpha: Client) -> None:
    made(alpha, {"name": "fixed", "size_gb": 3})
    for size in (3, 2):
        reply = alpha.post("/v1/volumes/fixed/resize", {"size_gb": size})
        assert reply.status == 400 and reply.error_code == "volume_cannot_shrink"


def test_volumes_count_against_the_hosts_disk(app: App, client: Client) -> None:
    too_big = client.post("/v1/volumes", {"name": "huge", "size_gb": 65536})
    assert too_big.status == 409 and too_big.error_code == "insufficient_capacity"
    assert too_big.body["error"]["details"]["resource"] == "disk"


def test_attach_refuses_what_cannot_be(app: App, alpha: Client, beta: Client,
                                       base_image: dict[str, Any]) -> None:
    made(alpha, {"name": "data", "size_gb": 1})
    made(alpha, {"name": "shared", "size_gb": 1, "multiattach": True})
    vm = alpha.post("/v1/vms", {"name": "box", "cpu": 1, "ram": 128, "image_name": "base"})
    assert alpha.wait_task(vm.body["task"]["id"])["status"] == "succeeded"
    rw = alpha.post("/v1/vms/box/volumes", {"volume": "shared"})
    assert rw.status == 400 and rw.error_code == "multiattach_requires_read_only"
    missing = alpha.post("/v1/vms/box/volumes", {"volume": "nope"})
    assert missing.status == 400 and missing.error_code == "volume_not_found"
    theirs = beta.post("/v1/vms/box/volumes", {"volume": "data"})
    assert theirs.status == 404 and theirs.error_code == "vm_not_found"
    made(beta, {"name": "theirs", "size_gb": 1})
    cross = alpha.post("/v1/vms/box/volumes", {"volume": "theirs"})
    assert cross.status == 400 and cross.error_code == "volume_not_found"
    not_attached = alpha.delete("/v1/vms/box/volumes/data")
    assert not_attached.status == 404 and not_attached.error_code == "volume_not_attached"


def test_a_vm_created_with_volumes_has_them_from_its_first_boot(
        app: App, alpha: Client, base_image: dict[str, Any]) -> None:
    data = made(alpha, {"name": "data", "size_gb": 1})
    shared = made(alpha, {"name": "shared", "size_gb": 1, "multiattach": True})
    reply = alpha.post("/v1/vms", {"name": "box", "cpu": 1, "ram": 128, "image_name": "base",
                                   "volumes": [{"volume": "data"},
                                               {"volume": "shared", "read_only": True}]})
    assert reply.status == 202, reply.body
    assert alpha.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
    vm = alpha.get("/v1/vms/box").body
    assert [(v["volume_name"], v["device"], v["read_only"], v["status"]) for v in vm["volumes"]] == [
        ("data", "vdc", False, "attached"), ("shared", "vdd", True, "attached")]
    xml = app.hosts.get("local").hypervisor.domain_xml(vm["id"])
    assert f"<serial>vol-{data['id'].replace('-', '')[:16]}</serial>" in xml
    assert "<shareable/>" in xml and xml.count("<readonly/>") == 2  # the seed and the dataset
    assert alpha.get("/v1/volumes/data").body["status"] == "in-use"
    taken = alpha.post("/v1/vms", {"name": "other", "cpu": 1, "ram": 128, "image_name": "base",
                                   "volumes": [{"volume": "data"}]})
    assert taken.status == 409 and taken.error_code == "volume_in_use"
    assert alpha.get("/v1/vms/other").error_code == "vm_not_found"
    twice = alpha.post("/v1/vms", {"name": "other", "cpu": 1, "ram": 128, "image_name": "base",
                                   "volumes": [{"volume": "shared", "read_only": True},
                                               {"volume": "shared", "read_only": True}]})
    assert twice.status == 400 and twice.error_code == "bad_request"
    rw = alpha.post("/v1/vms", {"name": "other", "cpu": 1, "ram": 128, "image_name": "base",
                                "volumes": [{"volume": "shared"}]})
    assert rw.status == 400 and rw.error_code == "multiattach_requires_read_only"
    reader = alpha.post("/v1/vms", {"name": "reader", "cpu": 1, "ram": 128,
                                    "image_name": "base",
                                    "volumes": [{"volume": "shared", "read_only": True}]})
    assert reader.status == 202
    assert alpha.wait_task(reader.body["task"]["id"])["status"] == "succeeded"
    assert len(alpha.get("/v1/volumes/shared").body["attachments"]) == 2
    deleted = alpha.delete("/v1/vms/box")
    assert alpha.wait_task(deleted.body["id"])["status"] == "succeeded"
    after = alpha.get("/v1/volumes/data").body
    assert after["status"] == "available" and after["attachments"] == []
    assert [a["vm_name"] for a in alpha.get("/v1/volumes/shared").body["attachments"]] == [
        "reader"]
    assert shared["multiattach"] is True


def test_a_failed_build_gives_its_volumes_back(app: App, make_app: Any, config: Config,
                                               alpha: Client, base_image: dict[str, Any]) -> None:
    made(alpha, {"name": "data", "size_gb": 1})
    with app.db.write() as conn:  # the build will find no file for the volume's layer
        conn.execute("UPDATE volumes SET top_layer = 'gone.qcow2'")
    reply = alpha.post("/v1/vms", {"name": "box", "cpu": 1, "ram": 128, "image_name": "base",
                                   "volumes": [{"volume": "data"}]})
    assert reply.status == 202
    assert alpha.wait_task(reply.body["task"]["id"])["status"] == "failed"
    assert alpha.get("/v1/vms/box").body["volumes"] == []
    assert alpha.get("/v1/volumes/data").body["attachments"] == []


def test_racing_attaches_take_an_exclusive_volume_once_and_share_a_multiattach_one(
        app: App, alpha: Client, base_image: dict[str, Any]) -> None:
    made(alpha, {"name": "solo", "size_gb": 1})
    made(alpha, {"name": "dataset", "size_gb": 1, "multiattach": True})
    vms = []
    for index in range(10):
        reply = alpha.post("/v1/vms", {"name": f"vm-{index}", "cpu": 1, "ram": 128,
                                       "image_name": "base"})
        assert alpha.wait_task(reply.body["task"]["id"])["status"] == "succeeded"
        vms.append(reply.body["id"])
    # Attach tasks wait at a gate, so every attachment stays recorded while the others race.
    gate, real_step = threading.Event(), app.runner.step

    def gated(task_id: str) -> float | None:
        gate.wait(30)
        return real_step(task_id)
    app.runner.step = gated
    server = LiveServer(app)
    try:
        headers = {"Authorization": f"Bearer {alpha.token}"}
        solo = race_each(server.url, [(f"/v1/vms/{vm}/volumes", {"volume": "solo"})
                                      for vm in vms], headers)
        shared = race_each(server.url, [(f"/v1/vms/{vm}/volumes",
                                         {"volume": "dataset", "read_only": True})
                                        for vm in vms], headers)
        attached = len(alpha.get("/v1/volumes/dataset").body["attachments"])  # still gated
    finally:
        gate.set()
        server.stop()
    assert sorted(reply.status for reply in solo) == [202] + [409] * 9
    assert {reply.body["error"]["code"] for reply in solo if reply.status == 409} == {
        "volume_in_use"}
    # Read-only, all share it; only the VM whose gated attach of solo holds it is busy.
    assert sorted(reply.status for reply in shared) == [202] * 9 + [409]
    assert [reply.body["error"]["code"] for reply in shared if reply.status == 409] == [
        "vm_busy"]
    assert attached == 9


def race_each(url: str, requests: list[tuple[str, dict[str, Any]]],
              headers: dict[str, str]) -> list[Any]:
    """POST every (path, body) at once, released by one barrier; the replies."""
    replies: list[Any] = []
    start = threading.Barrier(len(requests))

    def one(path: str, body: dict[str, Any]) -> None:
        start.wait()
        replies.append(post(url + path, body, headers))

    threads = [threading.Thread(target=one, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return replies


def pool_of(app: App) -> Any:
    hypervisor = app.hosts.get("local").hypervisor
    return hypervisor, f"iaas-volumes-{app.installation_id[:8]}"


def test_a_volume_whose_file_vanished_turns_to_error_at_the_next_sweep(app: App,
                                                                       alpha: Client) -> None:
    volume = made(alpha, {"name": "data", "size_gb": 1})
    made(alpha, {"name": "kept", "size_gb": 1})
    hypervisor, pool = pool_of(app)
    app.reconciler.sweep()
    assert alpha.get("/v1/volumes/data").body["status"] == "available"  # nothing is wrong yet
    file = next(name for name in hypervisor.pools.volumes(pool) if volume["id"] in name)
    hypervisor.pools.delete_volume(pool, file)  # behind the API's back
    app.reconciler.sweep()
    broken = alpha.get("/v1/volumes/data").body
    assert broken["status"] == "error" and broken["error"]["code"] == "volume_file_missing"
    assert alpha.get("/v1/volumes/kept").body["status"] == "available"
    assert alpha.wait_task(alpha.delete("/v1/volumes/data").body["id"])["status"] == "succeeded"


def test_orphaned_volume_files_are_reported_and_cleaned(app: App, alpha: Client,
                                                        config: Config) -> None:
    from src.cli import vm_cleanup
    made(alpha, {"name": "data", "size_gb": 1})
    hypervisor, pool = pool_of(app)
    stray = f"{app.installation_id[:8]}-vol-00000000-0000-4000-8000-000000000000-1.qcow2"
    foreign = "someone-elses.qcow2"
    for name in (stray, foreign):
        hypervisor.pools.create_volume(pool, name, 1024 ** 3, "qcow2")
    found = Client(app).get("/v1/admin/orphans").body["volumes"]
    assert found == [{"host": "local", "file": stray}]
    vm_cleanup(config, app.hosts)
    left = hypervisor.pools.volumes(pool)
    assert stray not in left and foreign in left
    assert alpha.get("/v1/volumes/data").body["status"] == "available"
    assert Client(app).get("/v1/admin/orphans").body["volumes"] == []
