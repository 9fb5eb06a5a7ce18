"""A long-poll wakes when its own task ends, not at every commit of every worker: each woken
waiter reads its task, and with a broker every worker's commit woke every long-poll."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from src.database import tasks as task_dao
from src.database.db import Database
from src.services.tasks.runner import TaskRunner, new_task_row
from src.utils.clock import utc_now


def test_commits_elsewhere_wake_only_the_waiters_of_tasks_that_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    tasks = [replace(new_task_row(None, "import", None), image_id=f"image-{index}",
                     status="running", executor="celery") for index in range(5)]
    with db.write(foreign_keys=False) as conn:  # images nobody made: only the rows matter
        for task in tasks:
            task_dao.insert(conn, task)
    runner = TaskRunner(db, 1, step=lambda _task_id: None, expire=lambda _task: None,
                        workers=1)
    reads = [0]
    real_get = task_dao.get

    def counted_get(conn: object, task_id: str) -> task_dao.TaskRow | None:
        reads[0] += 1
        return real_get(conn, task_id)  # type: ignore[arg-type]

    monkeypatch.setattr(task_dao, "get", counted_get)
    answers: dict[str, str] = {}
    waiters = [threading.Thread(target=lambda task_id=task.id: answers.__setitem__(
        task_id, (runner.wait(task_id, 30) or tasks[0]).status)) for task in tasks]
    try:
        for waiter in waiters:
            waiter.start()
        deadline = time.monotonic() + 10
        while reads[0] < len(tasks):  # each waiter has read its task once
            assert time.monotonic() < deadline
            time.sleep(0.01)
        reads[0] = 0
        for _ in range(20):  # twenty commits of other processes that end none of them
            runner.notify()
            time.sleep(0.01)  # (paces the commits as workers would; nothing is awaited)
        assert reads[0] < 40, f"{reads[0]} reads for 20 commits that ended nothing"
        with db.write() as conn:
            task_dao.finish(conn, tasks[0].id, utc_now())
        runner.notify()
        waiters[0].join(timeout=10)
        assert answers == {tasks[0].id: "succeeded"}
    finally:
        with db.write() as conn:
            for task in tasks[1:]:
                task_dao.finish(conn, task.id, utc_now())
        runner.notify()
        for waiter in waiters:
            waiter.join(timeout=10)
        runner.shutdown()
