"""The broker tier: the e2e fixtures, but tasks go through RabbitMQ to real Celery workers in
subprocesses (a vhost and user of our own per session)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from scripts.harness.broker import (
    Vhost,
    make_vhost,
    remove_vhost,
    start_worker,
    stop_worker,
)
from src.app import App
from src.config import Config
from tests.e2e.conftest import E2eAppFactory

WorkerFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture(scope="session")
def vhost() -> Iterator[Vhost]:
    try:
        made = make_vhost()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"RabbitMQ does not answer ({exc}); start it with scripts/broker.sh start",
                    pytrace=False)
    try:
        yield made
    finally:
        remove_vhost(made)


@pytest.fixture
def e2e_config(e2e_config: Config, vhost: Vhost) -> Config:
    """The e2e settings with IAAS_BROKER_URL: the app records and publishes, workers run."""
    return replace(e2e_config, broker_url=vhost.url)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start Celery workers (stopped at teardown); their logs are in the test's tmp dir."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Config, hosts: tuple[str, ...] = ("local",),
              images: bool = False) -> subprocess.Popen[bytes]:
        worker = start_worker(config, list(hosts), tmp_path / "worker.log", images=images)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        stop_worker(worker)


@pytest.fixture
def e2e_app(make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory) -> App:
    app = make_e2e_app(e2e_config)  # migrates the database before the worker opens it
    workers(e2e_config)
    return app
