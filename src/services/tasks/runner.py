"""Background tasks: bounded workers served fairly by project, waits that hold no worker,
queue expiry, one task at a time per VM, and long-poll on completion."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from src.database import tasks as task_dao
from src.database.db import Database
from src.services.tasks.fair_queue import FairQueue
from src.utils.clock import utc_now
from src.vocabulary import ACTIVE_TASK_STATUSES

log = logging.getLogger(__name__)

OTHER_WORKERS = 4
# Image imports: downloads that may take long run on workers of their own, so they never hold
# the workers of power actions (see _Entry.kind); one project holds at most import_project_max
# of them (IAAS_PROJECT_MAX_IMPORTS, 1), so another project's import always finds one.
IMPORT_WORKERS = 2
# Migrations hold their worker for the whole copy (libvirt's call blocks): workers of their own,
# so a drain never holds the workers of power actions.
MOVE_WORKERS = 4
POLL_S = 0.25  # a long-poll looks at the database this often for tasks other processes end
EXPIRED = "The task waited in the queue longer than IAAS_TASK_QUEUE_TIMEOUT and did not run."


class TaskFailed(Exception):
    """A task's work failed in a way the user should read: stable code plus message."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def new_task_row(vm_id: str | None, action: str, request_id: str | None,
                 project: str = "default", host: str | None = None) -> task_dao.TaskRow:
    return task_dao.TaskRow(id=str(uuid.uuid4()), vm_id=vm_id, action=action, status="queued",
                            error_code=None, error_message=None, created_at=utc_now(),
                            started_at=None, finished_at=None, request_id=request_id,
                            project=project, host=host)


class Executor(Protocol):
    """Runs queued tasks: the API's own workers, or Celery workers through the outbox."""

    name: str

    def submit(self, task: task_dao.TaskRow) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Next:
    """A task step's answer when the task is not done: look again after after_s seconds (or
    sooner when its VM's lifecycle event arrives), with state, plain JSON, for that next look.
    Nothing holds a worker meanwhile, and any process may take the next look."""

    after_s: float
    state: dict[str, Any]


Step = Callable[[str], "float | None"]  # run task id's next step: seconds until the next one


@dataclass
class _Entry:
    task: task_dao.TaskRow
    enqueued: float  # monotonic time of submit
    on_expire: Callable[[], None] | None
    started: bool = False
    due: float = 0.0  # monotonic time its next step may run, while it waits

    @property
    def kind(self) -> str:
        return {"create": "build", "import": "import", "migrate": "move"}.get(self.task.action,
                                                                              "other")


class TaskRunner:
    """The in-process executor: runs task steps on worker threads, builds on their own capped
    workers, imports on theirs, everything else on the others; projects are served in turn,
    each with at most project_max tasks running, and at most import_project_max imports.
    What a step does is `step` (src/services/actions/task_runs.py), the same code a Celery
    worker runs."""

    name = "inprocess"

    def __init__(self, db: Database, max_builds: int, *, step: Step,
                 expire: Callable[[task_dao.TaskRow], None], workers: int = OTHER_WORKERS,
                 project_max: int = 8, import_project_max: int = 1,
                 queue_timeout_s: float = 600.0,
                 on_finish: Callable[[task_dao.TaskRow], None] | None = None) -> None:
        """step runs a task's next step; expire ends the work of one that expired queued."""
        self._db = db
        self.step = step  # public: tests wrap it to hold one task at a gate
        self._expire_work = expire
        self._on_finish = on_finish
        self._queue_timeout_s = queue_timeout_s
        self._queue: FairQueue[_Entry] = FairQueue(project_max, {"import": import_project_max})
        self._waiting: dict[str, _Entry] = {}  # task id -> a started task between two steps
        self._cond = threading.Condition()
        self._stopping = False
        self._done = threading.Condition()
        self._ending: set[str] = set()  # tasks whose step runs here: a waiter waits for _ended
        self._waiters: dict[str, int] = {}  # task id -> how many long-polls wait on it
        self._woken: set[str] = set()  # waited tasks notify() found ended: read them again
        self._guard = threading.Lock()
        self._vm_locks: dict[str, threading.Lock] = {}
        self._threads = [threading.Thread(target=self._serve, args=(kind,), daemon=True,
                                          name=f"{kind}-{index}")
                         for kind, count in (("build", max_builds), ("other", workers),
                                             ("import", IMPORT_WORKERS), ("move", MOVE_WORKERS))
                         for index in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, task: task_dao.TaskRow) -> None:
        """Queue an already-inserted task row."""
        entry = _Entry(task, time.monotonic(), None)
        with self._cond:
            self._queue.put(task.project, entry.kind, entry)
            self._cond.notify_all()

    def poke(self, vm_id: str) -> None:
        """Something happened to the VM (a lifecycle event): run its waiting task's next step now."""
        with self._cond:
            for entry in self._waiting.values():
                if entry.task.vm_id == vm_id:
                    entry.due = 0.0
            self._cond.notify_all()

    def expire_queued(self) -> int:
        """Fail every task that has waited in the queue too long (task_expired); how many."""
        cutoff = time.monotonic() - self._queue_timeout_s
        with self._cond:
            old = self._queue.remove_where(lambda entry: entry.enqueued < cutoff)
        for entry in old:
            self._expire(entry)
        return len(old)

    def wait(self, task_id: str, timeout_s: float) -> task_dao.TaskRow | None:
        """The task once finished, or as it is when timeout_s runs out. A waiter reads its task
        again when notify() found it ended (tasks other processes end are seen that way too,
        through the change watcher), and every POLL_S in any case."""
        deadline = time.monotonic() + timeout_s
        with self._done:
            self._waiters[task_id] = self._waiters.get(task_id, 0) + 1
        try:
            while True:
                with self._db.read() as conn:
                    task = task_dao.get(conn, task_id)
                remaining = deadline - time.monotonic()
                with self._done:
                    ended = task is None or task.status not in ACTIVE_TASK_STATUSES
                    if (ended and task_id not in self._ending) or remaining <= 0:
                        return task
                    self._done.wait_for(lambda: task_id in self._woken,
                                        min(remaining, POLL_S))
                    self._woken.discard(task_id)
        finally:
            with self._done:
                left = self._waiters.pop(task_id) - 1
                if left:
                    self._waiters[task_id] = left
                else:
                    self._woken.discard(task_id)

    def shutdown(self) -> None:
        """Stop taking work and let running steps end; queued and waiting tasks stay as they are
        in the database and are ended as interrupted at the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)

    def close(self) -> None:
        """Nothing beyond shutdown (the executor interface's end)."""

    def notify(self) -> None:
        """Something committed (here, by the reconciler, or in another process): wake the
        long-polls whose task has ended. One read for all of them: with a broker every
        worker's commit lands here, and a read per waiter per commit was most of the API's
        work."""
        with self._done:
            waited = list(self._waiters)
        if not waited:
            return
        with self._db.read() as conn:
            ended = task_dao.ended_among(conn, waited)
        if ended:
            with self._done:
                self._woken.update(task_id for task_id in ended if task_id in self._waiters)
                self._done.notify_all()

    def _serve(self, kind: str) -> None:
        while True:
            with self._cond:
                entry = self._next(kind)
                while entry is None:
                    if self._stopping:
                        return
                    self._cond.wait(timeout=self._until_due())
                    entry = self._next(kind)
            if self._run(entry):
                continue  # it waits again, keeping its project's slot
            with self._cond:
                self._queue.done(entry.task.project, entry.kind)
                self._cond.notify_all()

    def _next(self, kind: str) -> _Entry | None:
        """A waiting task whose time has come, else the next queued one (under _cond)."""
        if self._stopping:
            return None
        now = time.monotonic()
        for task_id, entry in self._waiting.items():
            if entry.kind == kind and entry.due <= now:
                return self._waiting.pop(task_id)
        taken = self._queue.take(kind)
        return taken[1] if taken else None

    def _until_due(self) -> float:
        dues = [entry.due for entry in self._waiting.values()]
        return max(0.01, min(dues) - time.monotonic()) if dues else 1.0

    def _run(self, entry: _Entry) -> bool:
        """Run the entry's next step; True when it waits again (and was put back)."""
        task = entry.task
        if not entry.started and time.monotonic() - entry.enqueued > self._queue_timeout_s:
            self._expire(entry)
            return False
        entry.started = True
        with self._done:
            self._ending.add(task.id)
        with self._vm_lock(task.vm_id or task.id):  # an image's task has no VM to share
            try:
                after = self.step(task.id)
            except BaseException:
                self._release(task.id)
                raise
        if after is not None:
            self._release(task.id)
            with self._cond:
                entry.due = time.monotonic() + after
                self._waiting[task.id] = entry
                self._cond.notify_all()
            return True
        self._ended(task.id)
        return False

    def _ended(self, task_id: str) -> None:
        """The task's step ran (ended, or waits for its next): what follows its end (the VM
        re-read) is done before a waiter on it wakes, so the waiter sees its outcome."""
        with self._db.read() as conn:
            task = task_dao.get(conn, task_id)
        try:
            if task is not None:
                if (task.action == "delete" and task.status == "succeeded") or task.vm_id is None:
                    with self._guard:  # the VM is gone: no task will ask for its lock again
                        self._vm_locks.pop(task.vm_id or task.id, None)
                if self._on_finish is not None:
                    self._on_finish(task)
        finally:
            self._release(task_id)

    def _release(self, task_id: str) -> None:
        """Its step is over here: waiters on the task may read it again."""
        with self._done:
            self._ending.discard(task_id)
        self.notify()

    def _expire(self, entry: _Entry) -> None:
        with self._db.write() as conn:
            expired = task_dao.finish(conn, entry.task.id, utc_now(), ("task_expired", EXPIRED))
        if expired:
            log.warning("task %s (%s) of vm %s expired in the queue", entry.task.id,
                        entry.task.action, entry.task.vm_id)
            self._expire_work(entry.task)
        self.notify()

    def _vm_lock(self, vm_id: str) -> threading.Lock:
        with self._guard:
            return self._vm_locks.setdefault(vm_id, threading.Lock())
