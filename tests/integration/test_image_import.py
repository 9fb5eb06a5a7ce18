"""URL imports: a task downloads the image from a server of the test's own on 127.0.0.1 (with
IAAS_IMPORT_ALLOW_PRIVATE and IAAS_IMPORT_PORTS), showing progress; redirect loops, 404s,
dropped connections and checksums end in error, with one message for every failed download;
private and link-local URLs are refused at once without the setting; a server that drips holds
a worker only until the import's deadline, and one project only ever holds one import worker."""
from __future__ import annotations

import hashlib
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.database import tasks as task_dao
from src.services.images.imports import DOWNLOAD_FAILED
from src.utils import fetch
from src.utils.clock import utc_now
from tests.conftest import AppFactory
from tests.origin import ODD_REDIRECTS, Origin, reaching_origin
from tests.support import Client, LiveServer, post


@pytest.fixture
def importing_app(make_app: AppFactory, config: Config) -> App:
    return make_app(reaching_origin(config))


def start(client: Client, url: str, name: str = "imported", **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/images", {"name": name, "format": "qcow2", "url": url, **extra})
    assert reply.status == 201, reply.body
    assert reply.body["status"] == "importing" and reply.body["task_id"]
    body: dict[str, Any] = reply.body
    return body


def finished(client: Client, image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    task = client.wait_task(image["task_id"])
    assert task["image_id"] == image["id"] and task["vm_id"] is None
    assert task["action"] == "import"
    return task, client.get(f"/v1/images/{image['id']}").body


def test_an_import_shows_progress_then_boots(make_app: AppFactory, config: Config,
                                            source: Path) -> None:
    app = make_app(reaching_origin(config))
    client = Client(app)
    slow = Origin(source, pause_s=0.15)
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        image = start(client, f"{slow.url}/moved", sha256=digest)
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = client.get(f"/v1/images/{image['id']}").body
            if shown["status"] != "importing":
                break
            if shown["progress"]:
                seen.append(shown["progress"])
            time.sleep(0.1)
        assert any(0 < p["bytes_done"] < p["bytes_total"] == len(slow.data) for p in seen), seen
        task, shown = finished(client, image)
        assert task["status"] == "succeeded", task
        assert shown["status"] == "active" and shown["sha256"] == digest
        assert shown["progress"] is None and shown["size_bytes"]
        assert slow.requests == ["/moved", "/image.qcow2"]
        vm = client.post("/v1/vms", {"name": "from-url", "cpu": 1, "ram": 128,
                                     "image_name": "imported"})
        assert vm.status == 202 and client.wait_task(vm.body["task"]["id"])["status"] == "succeeded"
    finally:
        slow.stop()
    assert sorted(p.name for p in config.images_dir.iterdir()) == [image["file"]]


@pytest.mark.parametrize("path, code", [
    ("/loop", "too_many_redirects"),
    ("/missing", "download_failed"),
    ("/drop", "download_failed"),
    *((path, "url_not_allowed") for path in ODD_REDIRECTS),
])
def test_a_url_that_fails_leaves_the_image_in_error(importing_app: App, origin: Origin,
                                                    config: Config, path: str, code: str) -> None:
    client = Client(importing_app)
    image = start(client, origin.url + path)
    task, shown = finished(client, image)
    assert task["status"] == "failed" and task["error"]["code"] == code, task
    assert shown["status"] == "error" and shown["error"]["code"] == code
    assert list(config.images_dir.iterdir()) == []
    vm = client.post("/v1/vms", {"name": "nope", "cpu": 1, "ram": 128, "image_name": "imported"})
    assert vm.status == 409 and vm.error_code == "image_not_active"
    if path == "/loop":
        assert len(origin.requests) == 6  # the first request and five redirects


def test_an_unexpected_failure_leaves_the_image_in_error_not_importing(
        importing_app: App, origin: Origin, config: Config,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def surprise(*args: Any, **kwargs: Any) -> Any:
        raise UnicodeEncodeError("ascii", "/\xe9", 1, 2, "as http.client raised for a Location")

    monkeypatch.setattr(fetch, "open_url", surprise)
    client = Client(importing_app)
    task, shown = finished(client, start(client, f"{origin.url}/image.qcow2"))
    assert task["status"] == "failed" and task["error"]["code"] == "internal_error", task
    assert shown["status"] == "error" and shown["error"]["code"] == "internal_error", shown
    assert list(config.images_dir.iterdir()) == []


def test_an_import_of_unknown_length_stops_at_images_gb(importing_app: App, origin: Origin,
                                                        config: Config) -> None:
    client = Client(importing_app)
    assert client.request("PUT", "/v1/projects/default/quota", {"images_gb": 1}).status == 200
    # private: the project's own (public images are no project's, under no quota)
    busy = client.post("/v1/images", {"name": "busy", "format": "raw",
                                      "visibility": "private"}).body
    with importing_app.db.write() as conn:  # a chunked upload beside it has nearly filled it
        conn.execute("UPDATE images SET bytes_done = ? WHERE id = ?",
                     (1024 ** 3 - len(origin.data) // 2, busy["id"]))
    task, shown = finished(client, start(client, f"{origin.url}/no-length",
                                         visibility="private"))
    assert task["status"] == "failed" and task["error"]["code"] == "quota_exceeded", task
    assert shown["status"] == "error" and shown["error"]["code"] == "quota_exceeded"
    assert list(config.images_dir.iterdir()) == []


def test_a_checksum_that_does_not_match_fails_the_import(importing_app: App, origin: Origin,
                                                         config: Config) -> None:
    client = Client(importing_app)
    task, shown = finished(client, start(client, f"{origin.url}/image.qcow2", sha256="a" * 64))
    assert task["error"]["code"] == shown["error"]["code"] == "checksum_mismatch"
    assert list(config.images_dir.iterdir()) == []


def test_deleting_an_importing_image_cancels_it(make_app: AppFactory, config: Config,
                                                source: Path) -> None:
    client = Client(make_app(reaching_origin(config)))
    slow = Origin(source, pause_s=0.3)
    try:
        image = start(client, f"{slow.url}/image.qcow2")
        deadline = time.monotonic() + 10
        while not client.get(f"/v1/images/{image['id']}").body["progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.delete(f"/v1/images/{image['id']}").status == 204
        task = client.wait_task(image["task_id"])
        assert task["status"] == "failed" and task["error"]["code"] == "cancelled"
    finally:
        slow.stop()
    assert list(config.images_dir.iterdir()) == []


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service (link-local)
    "http://127.0.0.1:9/image.qcow2",
    "http://localhost/image.qcow2",
    "http://10.1.2.3/image.qcow2",
    "http://[::1]/image.qcow2",
    "http://[::ffff:169.254.169.254]/x",
    "ftp://example.org/image.qcow2",
])
def test_private_link_local_and_odd_urls_are_refused_at_once(client: Client, config: Config,
                                                             url: str) -> None:
    reply = client.post("/v1/images", {"name": "sneaky", "format": "qcow2", "url": url})
    assert reply.status == 400, reply.body
    assert reply.error_code == ("validation_failed" if url.startswith("ftp") else
                                "url_not_allowed")
    assert client.get("/v1/images").body["images"] == []


def test_register_import_and_upload_are_exclusive(client: Client) -> None:
    for body in ({"file": "a.qcow2", "url": "http://example.org/a"},
                 {"sha256": "A" * 64}, {"url": "http://example.org/a", "sha256": "0" * 63}):
        reply = client.post("/v1/images", {"name": "x", "format": "qcow2", **body})
        assert reply.status == 400 and reply.error_code == "validation_failed", body


def test_a_restart_fails_cut_imports_and_removes_partial_files(make_app: AppFactory,
                                                               config: Config) -> None:
    first = make_app(config)
    image = Client(first).post("/v1/images", {"name": "cut", "format": "qcow2"}).body
    with first.db.write() as conn:  # as a stop in the middle of a download leaves it
        conn.execute("UPDATE images SET status = 'importing', origin = 'import' WHERE id = ?",
                     (image["id"],))
    (config.images_dir / f".iaas-partial-{image['id']}-0000").write_bytes(b"half")
    first.close()
    shown = Client(make_app(config)).get(f"/v1/images/{image['id']}").body
    assert shown["status"] == "error" and shown["error"]["code"] == "interrupted"
    assert list(config.images_dir.iterdir()) == []


def test_an_idempotent_import_is_started_once(importing_app: App, origin: Origin) -> None:
    client = Client(importing_app)
    body = {"name": "once", "format": "qcow2", "url": f"{origin.url}/image.qcow2"}
    server = LiveServer(importing_app)
    try:
        key = {"Idempotency-Key": "import-1"}
        first = post(server.url + "/v1/images", body, key)
        again = post(server.url + "/v1/images", body, key)
    finally:
        server.stop()
    assert first.status == again.status == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.body["id"] == first.body["id"]
    client.wait_task(first.body["task_id"])
    assert [image["name"] for image in client.get("/v1/images").body["images"]] == ["once"]
    assert origin.requests == ["/image.qcow2"]
    events = client.get(f"/v1/events?resource_id={first.body['id']}").body["events"]
    assert [(event["method"], event["status"]) for event in events] == [("POST", 201)] * 2


def member(app: App, project: str) -> Client:
    return Client(app, token=app.tokens.issue(project, "member")[1])


def until(holds: Any, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not holds():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


@pytest.fixture
def dripping(source: Path) -> Any:
    server = Origin(source, drip_s=0.2)
    yield server
    server.stop()


def test_an_import_shows_progress_from_its_start(importing_app: App, dripping: Origin) -> None:
    """Before its first byte (here: headers that never end) it is {bytes_done: 0, ...}."""
    client = Client(importing_app)
    image = start(client, f"{dripping.url}/drip-headers")
    assert image["progress"] == {"bytes_done": 0, "bytes_total": None}
    until(lambda: "/drip-headers" in dripping.dripping)
    shown = client.get(f"/v1/images/{image['id']}").body
    assert shown["status"] == "importing"
    assert shown["progress"] == {"bytes_done": 0, "bytes_total": None}
    assert client.get("/v1/images").body["images"][0]["progress"] == shown["progress"]
    assert client.delete(f"/v1/images/{image['id']}").status == 204
    task = client.wait_task(image["task_id"], 10)  # a delete cuts the drip short
    assert task["status"] == "failed" and task["error"]["code"] == "cancelled", task
    until(lambda: dripping.closed == ["/drip-headers"], 5)


def test_dripping_imports_of_one_project_leave_the_other_worker_free(
        make_app: AppFactory, config: Config, dripping: Origin) -> None:
    """The review's M1: two imports of A whose server drips its headers; B's import completes
    while they still drip; A's fail at their deadline and their connections are closed."""
    app = make_app(replace(reaching_origin(config), import_timeout_s=4))
    a, b = member(app, "team-a"), member(app, "team-b")
    slow = [start(a, f"{dripping.url}/drip-headers?{n}", name=f"slow{n}") for n in (1, 2)]
    until(lambda: "/drip-headers?1" in dripping.dripping)
    victim = start(b, f"{dripping.url}/image.qcow2", name="victim")
    assert b.wait_task(victim["task_id"], 30)["status"] == "succeeded"
    assert dripping.closed == []  # B's ran while A's first still dripped...
    assert dripping.dripping == {"/drip-headers?1"}  # ...and A's second waited its turn
    assert b.get(f"/v1/images/{victim['id']}").body["status"] == "active"
    for image in slow:
        task = a.wait_task(image["task_id"], 30)
        assert task["status"] == "failed" and task["error"]["code"] == "task_timeout", task
        shown = a.get(f"/v1/images/{image['id']}").body
        assert shown["status"] == "error" and shown["error"]["code"] == "task_timeout"
    until(lambda: sorted(dripping.closed) == ["/drip-headers?1", "/drip-headers?2"], 5)
    assert dripping.dripping == set()


def test_a_task_ended_by_another_process_closes_its_download(importing_app: App,
                                                              dripping: Origin) -> None:
    """As the sweep of a worker or another API fails an overdue import: its connection here
    is closed within a second or two, not at the next byte."""
    client = Client(importing_app)
    image = start(client, f"{dripping.url}/drip-body")
    until(lambda: "/drip-body" in dripping.dripping)
    with importing_app.db.write() as conn:
        assert task_dao.finish(conn, image["task_id"], utc_now(), ("task_timeout", "overdue"))
    until(lambda: dripping.closed == ["/drip-body"], 5)
    until(lambda: client.get(f"/v1/images/{image['id']}").body["status"] == "error", 5)
    shown = client.get(f"/v1/images/{image['id']}").body
    assert shown["error"]["code"] == "task_timeout"
    assert list(importing_app.config.images_dir.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_every_failed_download_reads_the_same_for_members(
        importing_app: App, origin: Origin, caplog: pytest.LogCaptureFixture) -> None:
    """Refused, 404 or broken off: one message, so failures map no network; the log says which."""
    client = member(importing_app, "team-a")
    urls = {"missing": f"{origin.url}/missing", "drop": f"{origin.url}/drop",
            "refused": f"http://127.0.0.1:{_closed_port()}/image.qcow2"}
    with caplog.at_level(logging.WARNING, logger="src.services.images.imports"):
        for name, url in urls.items():
            task = client.wait_task(start(client, url, name=name)["task_id"])
            assert task["error"] == {"code": "download_failed", "message": DOWNLOAD_FAILED}, task
            shown = client.get(f"/v1/images/{name}").body
            assert shown["error"] == {"code": "download_failed", "message": DOWNLOAD_FAILED}
    logged = caplog.text
    assert "404" in logged and "Connection refused" in logged and "closed after" in logged


def test_the_private_switch_opens_no_port(make_app: AppFactory, config: Config,
                                          origin: Origin) -> None:
    client = Client(make_app(replace(config, import_allow_private=True)))
    reply = client.post("/v1/images", {"name": "x", "format": "qcow2",
                                       "url": f"{origin.url}/image.qcow2"})
    assert reply.status == 400 and reply.error_code == "url_not_allowed", reply.body
    assert "IAAS_IMPORT_PORTS" in reply.body["error"]["message"]
    assert origin.requests == []
