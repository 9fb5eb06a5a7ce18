# ruff: noqa: F811 - the fixtures come from test_reservations, by name
"""A reservation's whole life with a Celery worker owning the GPU host (libvirt's test driver,
whose domains live in the worker that opened it): booked, a VM of another project on the
claimed GPU told and stopped at start, the reservation's own VM made in the window and stopped
at its end."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from scripts.harness.broker import Vhost
from src.app import App
from src.config import Config
from src.database import tasks as task_dao
from src.hypervisor.domains import MISSING
from tests.e2e.broker.conftest import WorkerFactory
from tests.integration.test_capacity_queue import (
    create,
    member,
    running,
    status_of,
    until,
)
from tests.integration.test_preemptible import history, notice
from tests.integration.test_reservations import (  # noqa: F401 - fixtures
    at,
    book,
    quick_app,
    reservation_status,
    served,
    stopped_for,
    test_host,
)


@pytest.fixture
def config(config: Config, vhost: Vhost) -> Config:
    """The test-driver GPU host's settings, in broker mode. No sweep in the test's time: the
    API's own test-driver connection holds none of the worker's domains, so a sweep there would
    call them missing (on a real host both processes see one libvirtd)."""
    return replace(config, broker_url=vhost.url, reconcile_interval_s=3600)


def platform_stop(app: App, vm: dict[str, Any], reason: str) -> task_dao.TaskRow:
    """The VM's stop task the platform asked for with reason."""
    with app.db.read() as conn:
        rows = conn.execute("SELECT id FROM tasks WHERE vm_id = ? AND action = 'stop' "
                            "AND reason = ?", (vm["id"], reason)).fetchall()
        (task,) = [task_dao.get(conn, row[0]) for row in rows]
    assert task is not None
    return task


def ran_on_the_worker(app: App, vm: dict[str, Any], reason: str) -> None:
    """The stop went through the broker and succeeded, and the domain is not this process's."""
    task = platform_stop(app, vm, reason)
    assert (task.executor, task.status) == ("celery", "succeeded"), task
    assert app.hosts.get("local").hypervisor.power_state(vm["id"]) == MISSING


def test_a_reservation_preempts_then_runs_and_ends_its_vms_on_a_celery_worker(
        quick_app: App, served: str, workers: WorkerFactory) -> None:
    workers(quick_app.config)
    owner, other = member(quick_app, served, "team-a"), member(quick_app, served, "team-b")
    first = running(other, create(other, "first"))  # the worker answers: the window may begin
    booked = book(owner, 1, at(8), at(24))
    claimed = booked["hosts"][0]["gpus"]
    assert claimed != first["gpus"]  # a VM that is not preemptible keeps its GPU
    second = running(other, create(other, "second"))
    assert (second["gpus"], second["preempt_at"]) == (claimed, booked["start"])
    preempted = f"preempted: reservation {booked['id']}"
    stopped_for(other, second, preempted)
    actions = history(other, second)
    assert actions.index(notice(booked)) < actions.index(("stop", preempted)), actions
    ran_on_the_worker(quick_app, second, preempted)
    assert status_of(other, first) == "running"
    assert reservation_status(owner, booked) == "active"

    inside = running(owner, create(owner, "inside", reservation=booked["id"]))
    assert (inside["gpus"], inside["reservation"]) == (claimed, booked["id"])
    stopped_for(owner, inside, "reservation_ended")
    until(lambda: reservation_status(owner, booked) == "ended", "the reservation ended")
    ran_on_the_worker(quick_app, inside, "reservation_ended")
    assert status_of(other, first) == "running"
