"""GET /v1/queue: what waits for capacity, in fair order (a member: its own project's VMs)."""
from __future__ import annotations

from dataclasses import dataclass

from src.database import capacity_waits as wait_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services.rules import access
from src.services.rules.access import Principal

EVERY = 1_000_000  # a list of waiting VMs is not paged: the queue is what it is


@dataclass(frozen=True)
class Waiting:
    vm: vm_dao.VmRow
    wait: wait_dao.WaitRow


class QueueService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def list(self, caller: Principal) -> list[Waiting]:
        """The waiting VMs the caller sees, by their place in the fair order (those not
        ranked yet last, oldest first)."""
        project = access.scope(caller)
        with self._db.read() as conn:
            waits = wait_dao.list_all(conn, project)
            vms = {row.id: row for row in vm_dao.list_page(
                conn, status="queued", name=None, after=None, limit=EVERY, project=project)}
        found = [Waiting(vms[wait.vm_id], wait) for wait in waits if wait.vm_id in vms]
        return sorted(found, key=lambda entry: (entry.wait.position is None,
                                                entry.wait.position or 0, entry.wait.since))
