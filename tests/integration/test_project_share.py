"""IAAS_PROJECT_MAX_TASKS with Celery workers: a task whose project runs its share already is
handed on for later (its worker takes the next message), another project's task runs at once.
The steps a worker runs, on the test driver, with the broker's publish recorded."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from src.app import Core, build_core
from src.config import Config
from src.database import tasks as task_dao
from src.services.actions.task_runs import WAIT_FOR_SHARE_S
from src.services.images.catalog import NewImage
from src.services.rules.access import Principal
from src.services.vms.compute import ComputeService, CreateRequest
from src.utils.clock import utc_now
from tests.conftest import make_qcow2
from tests.integration.test_redelivery import ADMIN, Outbox


@pytest.fixture
def core(config: Config) -> Iterator[Core]:
    core = build_core(replace(config, project_max_tasks=1))
    core.hosts.start()
    make_qcow2(config.images_dir / "base.qcow2")
    core.images.create(NewImage(name="base", format="qcow2", file="base.qcow2"), ADMIN)
    yield core
    core.hosts.close()


def _task(core: Core, task_id: str) -> task_dao.TaskRow:
    with core.db.read() as conn:
        task = task_dao.get(conn, task_id)
    assert task is not None
    return task


def test_a_project_at_its_share_waits_holding_no_worker(core: Core) -> None:
    compute = ComputeService(core.db, core.hosts, core.images, Outbox(), core.capacity)
    team_a, team_b = Principal("t-a", "team-a", "member"), Principal("t-b", "team-b", "member")
    first, second = (compute.create(CreateRequest(name=name, image_name="base", cpu=1,
                                                  ram=64), team_a) for name in ("a1", "a2"))
    other = compute.create(CreateRequest(name="b1", image_name="base", cpu=1, ram=64), team_b)
    with core.db.write() as conn:  # a1 runs on another worker now (it took team-a's share)
        task_dao.mark_running(conn, first.task.id, utc_now(), "9999")
    published: list[tuple[int, float]] = []
    after = core.execution.step(second.task.id, 0, lambda seq, after_s: published.append(
        (seq, after_s)))
    assert (after, published) == (WAIT_FOR_SHARE_S, [(1, WAIT_FOR_SHARE_S)])
    held = _task(core, second.task.id)
    assert (held.status, json.loads(held.payload)["step"]) == ("queued", {"seq": 1})
    assert core.execution.step(other.task.id, 0, lambda *_: None) is None  # team-b: at once
    assert _task(core, other.task.id).status == "succeeded"
    with core.db.write() as conn:
        task_dao.finish(conn, first.task.id, utc_now())
    assert core.execution.step(second.task.id, 1, lambda *_: None) is None  # its turn now
    assert _task(core, second.task.id).status == "succeeded"
