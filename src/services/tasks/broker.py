"""Phase 2: tasks through RabbitMQ to Celery workers. The API records each task in the same
transaction as the change that asks for it (the outbox); a relay hands unpublished rows to the
broker (persistent messages, durable queues, publisher confirms) and marks them published. A
task accepted while the broker is down simply waits in the outbox.

One queue per host (`iaas.host.<name>`), so a slow or dead host delays no other host's work.
No result backend: the database is the truth about every task.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery  # type: ignore[import-untyped]
from kombu.connection import Connection

from src.database import tasks as task_dao
from src.database.db import Database
from src.services.tasks.change_watch import ChangeWatcher
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

STEP_TASK = "iaas.step"
RELAY_INTERVAL_S = 0.5
RELAY_BATCH = 100
BROKER_RETRY_S = 2.0
# A publish rides out a dropped connection (RabbitMQ restarting) for a few seconds, then raises.
SEND_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


IMAGES_QUEUE = "iaas.images"  # URL imports: downloads to the control node's images dir


def queue_of(host: str) -> str:
    return f"iaas.host.{host}"


def queue_for(task: task_dao.TaskRow) -> str:
    """A URL import goes to the images queue; every other task (a VM's, a volume's) to the
    queue of the host it works on."""
    return IMAGES_QUEUE if task.action == "import" else queue_of(task.host or "local")


def celery_app(broker_url: str) -> Celery:
    """The Celery app both sides share: acks after the work, one message at a time, no results."""
    app = Celery("iaas", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a message is acknowledged once its step has run...
        task_reject_on_worker_lost=True,  # ...and goes back to the queue if its worker dies
        worker_prefetch_multiplier=1,
        # After a reconnect with steps still running, Celery lowers the prefetch count and
        # restores it as they end; with thread workers the acks of those steps could then sit
        # unsent, and the worker took nothing more until RabbitMQ dropped it 180 s later.
        worker_enable_prefetch_count_reduction=False,
        task_ignore_result=True, result_backend=None,
        task_serializer="json", accept_content=["json"],
        broker_transport_options={"confirm_publish": True},  # publisher confirms
        broker_connection_retry_on_startup=True,
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
    )
    return app


class BrokerExecutor:
    """The API's side: tasks go to the outbox; a relay thread publishes them."""

    name = "celery"

    def __init__(self, db: Database, app: Celery,
                 on_change: Callable[[], None] = lambda: None) -> None:
        """on_change: called soon after a worker commits (wakes the API's long-polls)."""
        self._db = db
        self._app = app
        self._watcher = ChangeWatcher(db, on_change)
        self._watcher.start()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="outbox-relay", daemon=True)
        self._thread.start()

    def submit(self, task: task_dao.TaskRow) -> None:
        """The row is in the outbox already (inserted with the change); publish it soon."""
        self._wake.set()

    def publish_pending(self) -> int:
        """Hand every unpublished task to the broker; how many. Raises: whatever kombu raises
        while the broker is away (the rows stay in the outbox)."""
        published = 0
        while True:
            with self._db.read() as conn:
                rows = task_dao.unpublished(conn, RELAY_BATCH)
            sent: list[str] = []
            try:
                for row in rows:
                    send(self._app, row.id, queue_for(row), seq=0, countdown=0.0)
                    sent.append(row.id)
            finally:  # one write for the batch: a write per row queued behind every worker's
                if sent:  # (a row sent again after a failure here is a duplicate, harmless)
                    with self._db.write() as conn:
                        now = utc_now()
                        for task_id in sent:
                            task_dao.mark_published(conn, task_id, now)
            published += len(sent)
            if len(rows) < RELAY_BATCH:
                return published

    def queue_depths(self, hosts: list[str]) -> dict[str, int]:
        """Messages waiting in each host's queue (0 for a queue not declared yet)."""
        depths = {}
        with Connection(self._app.conf.broker_url,  # type: ignore[no-untyped-call]
                        connect_timeout=2) as connection:
            channel = connection.default_channel
            for host in hosts:
                try:
                    depths[host] = int(channel.queue_declare(
                        queue=queue_of(host), passive=True).message_count)
                except Exception:  # noqa: BLE001 - a queue nobody declared yet holds nothing
                    depths[host] = 0
                    channel = connection.channel()
        return depths

    def close(self) -> None:
        self._watcher.stop()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _relay(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RELAY_INTERVAL_S)
            self._wake.clear()
            try:
                count = self.publish_pending()
            except Exception as exc:  # noqa: BLE001 - the broker is away: try again later
                log.warning("outbox relay: broker unavailable (%s); retrying", exc)
                self._stop.wait(BROKER_RETRY_S)
                continue
            if count:
                log.debug("outbox relay published %d task(s)", count)


def send(app: Celery, task_id: str, queue: str, seq: int, countdown: float) -> Any:
    """Publish one step of a task to queue (persistent, confirmed)."""
    return app.send_task(STEP_TASK, args=[task_id, seq], queue=queue,
                         countdown=countdown or None, retry=True, retry_policy=SEND_RETRY)
