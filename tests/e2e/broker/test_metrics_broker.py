"""/metrics in the distributed mode: queue depth per host queue, the outbox, and task latency
recorded by the worker process that ran the task."""
from __future__ import annotations

import time

from src.config import Config
from tests.e2e.broker.conftest import WorkerFactory
from tests.e2e.broker.test_faults import create
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.support import scrape

LOCAL_QUEUE = (("host", "local"), ("queue", "iaas.host.local"))


def test_queue_depth_outbox_and_latency_by_executor(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory) -> None:
    app = make_e2e_app(e2e_config)
    with served(app) as client:
        register_tiny_image(client)
        vm = create(client)  # no worker yet: the message waits in the host's queue
        deadline = time.monotonic() + 20
        while scrape(app).get(("iaas_queue_depth", LOCAL_QUEUE)) != 1:
            assert time.monotonic() < deadline, scrape(app)
            time.sleep(0.2)
        assert scrape(app)[("iaas_outbox_unpublished", ())] == 0
        workers(e2e_config)
        assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
        samples = scrape(app)
        assert samples[("iaas_queue_depth", LOCAL_QUEUE)] == 0
        for phase in ("queued", "running"):
            assert samples[("iaas_task_latency_seconds_count", (
                ("action", "create"), ("executor", "celery"), ("phase", phase)))] == 1
        # It waited in the queue until the worker came: at least the few seconds above.
        assert samples[("iaas_task_latency_seconds_sum", (
            ("action", "create"), ("executor", "celery"), ("phase", "queued")))] > 0.2
