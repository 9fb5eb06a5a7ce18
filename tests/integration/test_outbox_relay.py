"""The outbox relay publishes a batch of tasks with one database write, not one per task:
each write queues behind every worker's."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from scripts.harness.broker import make_vhost, remove_vhost
from src.database import tasks as task_dao
from src.database.db import Database
from src.services.tasks.broker import BrokerExecutor, celery_app
from src.services.tasks.runner import new_task_row


class CountedWrites(Database):
    """A Database that counts its write units of work."""

    writes = 0

    @contextmanager
    def write(self, foreign_keys: bool = True) -> Iterator[object]:  # type: ignore[override]
        with super().write(foreign_keys) as conn:
            yield conn
        type(self).writes += 1


def test_a_batch_of_tasks_is_marked_published_in_one_write(tmp_path: Path) -> None:
    try:
        vhost = make_vhost()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"RabbitMQ does not answer ({exc}); start it with scripts/broker.sh start",
                    pytrace=False)
    db = CountedWrites(tmp_path / "iaas.db")
    db.migrate()
    with db.write(foreign_keys=False) as conn:  # imports of images nobody made: the relay
        for index in range(5):                     # reads only the tasks
            task_dao.insert(conn, replace(new_task_row(None, "import", None),
                                          executor="celery", image_id=f"image-{index}"))
    CountedWrites.writes = 0
    relay = BrokerExecutor(db, celery_app(vhost.url))  # its relay publishes what waits
    try:
        deadline = time.monotonic() + 30
        while True:
            with db.read() as conn:
                if task_dao.count_unpublished(conn) == 0:
                    break
            assert time.monotonic() < deadline, "the relay never published the outbox"
            time.sleep(0.05)
    finally:
        relay.close()
        remove_vhost(vhost)
    assert CountedWrites.writes == 1
