"""A VM's max_runtime_s (as Slurm's --time): each run ends at its start plus the limit. The
capacity clock then stops the VM (history: max_runtime_reached) and its GPUs go back, so what
waits for them is placed; until then the queue knows when they come back (estimated_start_at).
A stopped VM keeps its disks; a start begins a new run of the same limit."""
from __future__ import annotations

import logging
from dataclasses import replace

from src.database import tasks as task_dao
from src.database import vm_terms as terms_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services.tasks.runner import Executor
from src.services.vms.preemption import stop_for
from src.utils.clock import utc_now, utc_plus
from src.vocabulary import MAX_RUNTIME_REACHED

log = logging.getLogger(__name__)
RUN_STARTS = ("create", "start")  # a reboot, a pause or a move keeps the run going
RUN_ENDS = ("stop", "shutdown")
RUNNING = ("running", "paused")  # what stop_for stops with a task (its end ends the run)


def after_task(db: Database, task: task_dao.TaskRow) -> None:
    """A run begins when a create or start succeeded, and is over once the VM stopped."""
    if task.status != "succeeded" or task.vm_id is None:
        return
    if task.action in RUN_STARTS:
        with db.write() as conn:
            terms = terms_dao.get(conn, task.vm_id)
            if terms.max_runtime_s is not None:
                began = task.finished_at or utc_now()
                terms_dao.put(conn, replace(terms, runs_until=utc_plus(began,
                                                                       terms.max_runtime_s)))
    elif task.action in RUN_ENDS:
        with db.write() as conn:
            terms_dao.end_run(conn, task.vm_id)


class RuntimeLimits:
    def __init__(self, db: Database, executor: Executor) -> None:
        self._db = db
        self._executor = executor

    def enforce(self) -> None:
        """One look of the capacity clock: stop each VM whose run is over. The run ends once
        the VM stopped (after_task), so one busy with another task, or whose stop failed, is
        asked again at the next look. A VM found running without a run begins one now."""
        now = utc_now()
        with self._db.read() as conn:
            missing = terms_dao.runs_missing(conn)
            over = terms_dao.past_runtime(conn, now)
        for vm_id, limit in missing:
            with self._db.write() as conn:
                terms_dao.begin_run(conn, vm_id, utc_plus(now, limit))
            log.warning("vm %s runs with no run begun (a start not seen to its end): its "
                        "max_runtime_s counts from now", vm_id)
        for vm_id, runs_until in over:
            if stop_for(self._db, self._executor, vm_id, MAX_RUNTIME_REACHED):
                with self._db.write() as conn:
                    row = vm_dao.get(conn, vm_id)
                    if row is None or row.status not in RUNNING:  # stopped at once: no task
                        terms_dao.end_run(conn, vm_id, runs_until)
                log.info("vm %s stopped: its max_runtime_s is reached", vm_id)
