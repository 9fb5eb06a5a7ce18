"""The reservations' side of the capacity clock (every IAAS_RESERVATION_TICK seconds): a window
that has begun becomes active and the VMs on its GPUs that are not its own are stopped
(`preempted: reservation <id>`); a window that is over becomes ended and its VMs are stopped
(`reservation_ended`). Each look re-checks what the last one asked for, so a VM busy with
another task at one look is stopped at the next; a stop gives the GPUs back once it is done."""
from __future__ import annotations

import logging

from src.database import gpus as gpu_dao
from src.database import reservations as reservation_dao
from src.database import vm_terms as terms_dao
from src.database.db import Database
from src.services.tasks.runner import Executor
from src.services.vms import preemption
from src.services.vms.preemption import stop_for
from src.utils.clock import utc_now
from src.vocabulary import PREEMPTED, RESERVATION_ENDED

log = logging.getLogger(__name__)


class ReservationClock:
    def __init__(self, db: Database, executor: Executor) -> None:
        self._db = db
        self._executor = executor

    def enforce(self) -> None:
        """One look: statuses first, then the stops they call for."""
        now = utc_now()
        with self._db.write() as conn:
            for row in reservation_dao.due(conn, now):
                if row.end_at <= now:
                    if reservation_dao.set_status(conn, row.id, "ended", ("pending", "active")):
                        log.info("reservation %s ended", row.id)
                elif row.start_at <= now and reservation_dao.set_status(
                        conn, row.id, "active", ("pending",)):
                    log.info("reservation %s started", row.id)
        for vm_id, reservation_id in self._intruders(now):
            if not self._warned(vm_id, reservation_id, now):
                continue
            if stop_for(self._db, self._executor, vm_id,
                        PREEMPTED.format(reservation=reservation_id)):
                log.info("vm %s preempted: reservation %s starts", vm_id, reservation_id)
        with self._db.read() as conn:
            over = terms_dao.holding_after_window(conn, now)
        for vm_id, reservation_id in over:
            if stop_for(self._db, self._executor, vm_id, RESERVATION_ENDED):
                log.info("vm %s stopped: reservation %s is over", vm_id, reservation_id)

    def _warned(self, vm_id: str, reservation_id: str, now: str) -> bool:
        """Only a VM told beforehand is preempted: one whose history holds the reservation's
        notice. A preemptible VM without one (it ran before notices were written) gets it now;
        any other is left running, and the reservation lacks that GPU."""
        with self._db.write() as conn:
            if preemption.noticed(conn, vm_id, reservation_id):
                return True
            if terms_dao.get(conn, vm_id).preemptible:
                row = reservation_dao.get(conn, reservation_id)
                preemption.notify(conn, vm_id, reservation_id,
                                  row.start_at if row else now, now)
                return True
        log.warning("vm %s holds a GPU reservation %s claims but was never told: left running",
                    vm_id, reservation_id)
        return False

    def _intruders(self, now: str) -> list[tuple[str, str]]:
        """(VM, reservation) of VMs holding a GPU that another reservation claims now."""
        with self._db.read() as conn:
            claims = reservation_dao.claims_on_held(conn, now)
            held = [gpu for gpu in gpu_dao.list_all(conn) if gpu.vm_id is not None]
            terms = terms_dao.of_vms(conn, [gpu.vm_id or "" for gpu in held])
        found: dict[str, str] = {}
        for gpu in held:
            vm_id = gpu.vm_id or ""
            own = terms[vm_id].reservation_id if vm_id in terms else None
            for claim in claims.get((gpu.host, gpu.id), ()):
                if claim.start_at <= now and claim.reservation_id != own:
                    found.setdefault(vm_id, claim.reservation_id)
        return sorted(found.items())
