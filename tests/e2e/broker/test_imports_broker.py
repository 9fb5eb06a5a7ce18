"""URL imports in the distributed mode run on the images worker (queue iaas.images); one whose
worker is SIGKILLed mid-download starts again on the next worker and lands once, leaving no
half-written file behind; a project whose imports drip holds one consumer only, and the worker
closes their connections at their deadline."""
from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from src.config import Config
from tests.e2e.broker.conftest import WorkerFactory
from tests.e2e.conftest import E2eAppFactory, served
from tests.e2e.http_client import HttpClient
from tests.origin import Origin, full_qcow2, reaching_origin

PARTIAL = ".iaas-partial-"


@pytest.fixture
def slow_origin(tmp_path: Path) -> Iterator[Origin]:
    """8 MiB served in 20 pieces 0.25 s apart (5 s): time to kill the worker mid-download."""
    server = Origin(full_qcow2(tmp_path / "source.qcow2"), pause_s=0.25)
    yield server
    server.stop()


def test_an_import_killed_with_its_worker_lands_once_on_the_next(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
        slow_origin: Origin) -> None:
    config = reaching_origin(e2e_config)
    app = make_e2e_app(config)
    first = workers(config, (), images=True)
    with served(app) as client:
        reply = client.post("/v1/images", {"name": "far", "format": "qcow2",
                                           "url": f"{slow_origin.url}/image.qcow2"})
        assert reply.status == 201, reply.body
        image = reply.body
        deadline = time.monotonic() + 30
        while not list(config.images_dir.glob(PARTIAL + "*")):  # the download is under way
            assert time.monotonic() < deadline, "the import never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        workers(config, (), images=True)
        task = client.wait_task(image["task_id"], 120)
        shown = client.get(f"/v1/images/{image['id']}").body
    assert task["status"] == "succeeded", task
    assert shown["status"] == "active"
    assert shown["sha256"] == hashlib.sha256(slow_origin.data).hexdigest()
    assert len(slow_origin.requests) == 2  # the download started again from its beginning
    assert not list(config.images_dir.glob(PARTIAL + "*"))
    with app.db.read() as conn:
        assert conn.execute("SELECT attempts FROM tasks WHERE id = ?",
                            (image["task_id"],)).fetchone()[0] == 2


def test_dripping_imports_of_one_project_wait_without_holding_a_consumer(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
        slow_origin: Origin) -> None:
    """The review's M1 on Celery: the images worker has 2 consumers; A's second dripping
    import is handed back for later instead of taking the second, so B's import runs at once;
    A's fail at their deadline, their connections closed by the worker."""
    config = replace(reaching_origin(e2e_config), import_timeout_s=4)
    app = make_e2e_app(config)
    workers(config, (), images=True)  # --concurrency 2
    slow_origin.drip_s, slow_origin.pause_s = 0.2, 0.0  # drips, and B served at once
    with served(app) as admin:
        a, b = (HttpClient(admin.base_url, app.tokens.issue(project, "member")[1])
                for project in ("team-a", "team-b"))
        slow = [a.post("/v1/images", {"name": f"slow{n}", "format": "raw",
                                      "url": f"{slow_origin.url}/drip-headers?{n}"}).body
                for n in (1, 2)]
        deadline = time.monotonic() + 30
        while not slow_origin.dripping:
            assert time.monotonic() < deadline, "no import started"
            time.sleep(0.05)
        victim = b.post("/v1/images", {"name": "victim", "format": "qcow2",
                                       "url": f"{slow_origin.url}/image.qcow2"}).body
        done = b.wait_task(victim["task_id"], 60)
        assert done["status"] == "succeeded", done
        assert slow_origin.closed == []  # B's ran while A's first still dripped...
        assert len(slow_origin.dripping) == 1  # ...and A's second waited its turn
        for image in slow:
            task = a.wait_task(image["task_id"], 60)
            assert task["status"] == "failed" and task["error"]["code"] == "task_timeout", task
    deadline = time.monotonic() + 10
    while sorted(slow_origin.closed) != ["/drip-headers?1", "/drip-headers?2"]:
        assert time.monotonic() < deadline, slow_origin.closed
        time.sleep(0.05)
