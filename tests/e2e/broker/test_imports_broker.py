"""URL imports in the distributed mode run on the images worker (queue iaas.images); one whose
worker is SIGKILLed mid-download starts again on the next worker and lands once, leaving no
half-written file behind."""
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
from tests.origin import Origin, full_qcow2

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
    config = replace(e2e_config, import_allow_private=True)
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
