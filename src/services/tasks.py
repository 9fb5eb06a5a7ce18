"""Background tasks: bounded worker pools, one task at a time per VM, long-poll on completion."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from src.database import tasks as task_dao
from src.database.db import Database
from src.utils.clock import utc_after, utc_now
from src.vocabulary import ACTIVE_TASK_STATUSES

log = logging.getLogger(__name__)

OTHER_WORKERS = 4


class TaskFailed(Exception):
    """A task's work failed in a way the user should read: stable code plus message."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def new_task_row(vm_id: str, action: str, request_id: str | None,
                 project: str = "default") -> task_dao.TaskRow:
    return task_dao.TaskRow(id=str(uuid.uuid4()), vm_id=vm_id, action=action, status="queued",
                            error_code=None, error_message=None, created_at=utc_now(),
                            started_at=None, finished_at=None, request_id=request_id,
                            project=project)


class TaskRunner:
    """Runs task work off the request thread; builds are capped, further ones wait as queued."""

    def __init__(self, db: Database, max_builds: int,
                 on_finish: Callable[[task_dao.TaskRow], None] | None = None) -> None:
        self._db = db
        self._on_finish = on_finish
        self._builds = ThreadPoolExecutor(max_builds, thread_name_prefix="build")
        self._others = ThreadPoolExecutor(OTHER_WORKERS, thread_name_prefix="task")
        self._done = threading.Condition()
        self._guard = threading.Lock()
        self._vm_locks: dict[str, threading.Lock] = {}
        self._futures: dict[str, Future[None]] = {}

    def submit(self, task: task_dao.TaskRow, work: Callable[[], None], timeout_s: float) -> None:
        """Queue work for an already-inserted task row; it must end within timeout_s of starting."""
        pool = self._builds if task.action == "create" else self._others
        future = pool.submit(self._run, task, work, timeout_s)
        with self._guard:
            self._futures[task.id] = future
        future.add_done_callback(lambda _f: self._forget(task.id))

    def wait(self, task_id: str, timeout_s: float) -> task_dao.TaskRow | None:
        """The task once finished, or as it is when timeout_s runs out."""
        deadline = time.monotonic() + timeout_s
        with self._done:
            while True:
                with self._db.read() as conn:
                    task = task_dao.get(conn, task_id)
                remaining = deadline - time.monotonic()
                if task is None or task.status not in ACTIVE_TASK_STATUSES or remaining <= 0:
                    return task
                self._done.wait(remaining)

    def shutdown(self) -> None:
        """Stop taking work; queued tasks stay queued and are marked interrupted at next start."""
        for pool in (self._builds, self._others):
            pool.shutdown(wait=True, cancel_futures=True)

    def _vm_lock(self, vm_id: str) -> threading.Lock:
        with self._guard:
            return self._vm_locks.setdefault(vm_id, threading.Lock())

    def _forget(self, task_id: str) -> None:
        with self._guard:
            self._futures.pop(task_id, None)

    def _run(self, task: task_dao.TaskRow, work: Callable[[], None], timeout_s: float) -> None:
        with self._vm_lock(task.vm_id):
            with self._db.write() as conn:
                started = task_dao.mark_running(conn, task.id, utc_now(), utc_after(timeout_s))
            if not started:
                return  # it was ended while it waited (start-up recovery or a timeout)
            error = None
            try:
                work()
            except TaskFailed as exc:
                error = (exc.code, exc.message)
            except Exception:  # the task must end failed, never stay running
                log.exception("task %s (%s) crashed", task.id, task.action)
                error = ("internal_error", "The task failed unexpectedly; see the server log.")
            self._finish(task.id, error)
        if task.action == "delete" and error is None:
            with self._guard:  # the VM is gone: no task will ask for its lock again
                self._vm_locks.pop(task.vm_id, None)
        log.info("task %s %s for vm %s: %s", task.id, task.action, task.vm_id,
                 "succeeded" if error is None else f"failed ({error[0]})")

    def _finish(self, task_id: str, error: tuple[str, str] | None) -> None:
        with self._db.write() as conn:
            if not task_dao.finish(conn, task_id, utc_now(), error):
                log.warning("task %s ended after it had been failed (timed out)", task_id)
            task = task_dao.get(conn, task_id)
        self.notify()
        if self._on_finish is not None and task is not None:
            self._on_finish(task)

    def notify(self) -> None:
        """Wake long-polls: a task ended (here or by the reconciler)."""
        with self._done:
            self._done.notify_all()
