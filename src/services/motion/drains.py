"""Drain a host: it takes no new VMs, and each of its VMs migrates away (live where it can, cold
where it must: GPUs), one task each, IAAS_DRAIN_PARALLEL at a time; the VMs no host can take
stay, listed with the reason."""
from __future__ import annotations

import logging
from typing import Any

from src import errors
from src.database import host_drains as drain_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.database.host_drains import DrainRow
from src.services.hosts.admin import HostService
from src.services.hosts.registry import HostRegistry
from src.services.motion.requests import MigrationService
from src.services.motion.work import drain_of
from src.services.rules import access
from src.services.rules.access import Principal
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

# What keeps one VM where it is; the drain goes on with the others.
STAYS = (errors.VmNotMigratable, errors.InsufficientCapacity, errors.InvalidState,
         errors.VmBusy)


class DrainService:
    def __init__(self, db: Database, hosts: HostRegistry, host_views: HostService,
                 moves: MigrationService) -> None:
        self._db = db
        self._hosts = hosts
        self._host_views = host_views
        self._moves = moves

    def drain(self, name: str, caller: Principal, request_id: str | None) -> dict[str, Any]:
        """Disable the host and queue a move of each of its VMs; the host as shown, with its
        drain. Draining again queues moves for the VMs still there (those moving go on).

        Raises: Forbidden, HostNotFound, HostUnavailable (it does not answer: its VMs cannot be moved off it).
        """
        access.require_admin(caller)
        self._hosts.require_up(name)
        self._host_views.update(name, {"enabled": False})
        with self._db.read() as conn:
            vms = vm_dao.list_on(conn, name)
            earlier = drain_dao.get(conn, name)
        moves = [move for move in (earlier.moves if earlier else [])
                 if self._still_moving(move["task_id"])]
        moving = {move["vm_id"] for move in moves}
        unmovable: list[dict[str, str]] = []
        for row in vms:
            if row.id in moving:
                continue
            live = not row.gpus  # QEMU cannot migrate a device passed through: those go cold
            try:
                task = self._moves.queue(row, row.name, None, live, request_id, drain=name)
            except STAYS as exc:
                unmovable.append({"vm_id": row.id, "vm": row.name, "reason": exc.message})
                continue
            moves.append({"task_id": task.id, "vm_id": row.id, "vm": row.name})
        with self._db.write() as conn:
            drain_dao.put(conn, DrainRow(name, utc_now(), moves, unmovable))
        log.info("draining host %s: %d move(s) queued, %d VM(s) stay", name, len(moves),
                 len(unmovable))
        return self._host_views.show(name)

    def _still_moving(self, task_id: str) -> bool:
        with self._db.read() as conn:
            task = task_dao.get(conn, task_id)
        return task is not None and task.status in ("queued", "running") and bool(
            drain_of(task))
