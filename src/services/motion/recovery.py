"""Moves a stop cut short: the embedded runner's are run again after a restart, and a move whose
task ended without finishing it (it timed out) is finished or rolled back by housekeeping."""
from __future__ import annotations

import logging

from src.database import tasks as task_dao
from src.database import vm_migrations as move_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.services.motion.work import MigrationWork
from src.services.tasks.runner import TaskFailed
from src.vocabulary import ACTIVE_TASK_STATUSES, MOTION_ACTIONS

log = logging.getLogger(__name__)


class MoveRecovery:
    def __init__(self, db: Database, work: MigrationWork) -> None:
        self._db = db
        self._work = work

    def interrupted(self) -> list[task_dao.TaskRow]:
        """The embedded runner's moves that were under way when it stopped (to run again)."""
        with self._db.read() as conn:
            return [task for task in task_dao.list_active(conn)
                    if task.executor == "inprocess" and task.action in MOTION_ACTIONS]

    def settle_orphans(self) -> int:
        """Finish or roll back every move whose task has ended; how many were settled."""
        with self._db.read() as conn:
            orphans = [move for move in move_dao.list_active(conn)
                       if (task := task_dao.get(conn, move.task_id)) is None
                       or task.status not in ACTIVE_TASK_STATUSES]
        settled = 0
        for move in orphans:
            try:
                self._work.settle(move)
                settled += 1
            except (HypervisorError, TaskFailed) as exc:
                log.warning("move %s of vm %s stays unsettled for now: %s", move.task_id,
                            move.vm_id, exc)
        return settled
