"""URL imports: a task downloads the image from a server of the test's own on 127.0.0.1 (with
IAAS_IMPORT_ALLOW_PRIVATE), showing progress; redirect loops, 404s, dropped connections and
checksums end in error; private and link-local URLs are refused at once without the setting."""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.utils import fetch
from tests.conftest import AppFactory
from tests.origin import ODD_REDIRECTS, Origin
from tests.support import Client, LiveServer, post


@pytest.fixture
def importing_app(make_app: AppFactory, config: Config) -> App:
    return make_app(replace(config, import_allow_private=True))


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
    app = make_app(replace(config, import_allow_private=True))
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
    client = Client(make_app(replace(config, import_allow_private=True)))
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
