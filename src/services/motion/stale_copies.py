"""A host that comes back after its VMs were evacuated still holds their old copies: each one's
domain is destroyed (if it runs) and undefined, and its disks deleted unless the hosts share
them (the rebuilt VM uses those very files). Never started: two copies must never run."""
from __future__ import annotations

import logging

from src.database import vm_evacuations as evac_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.services.hosts.registry import Host
from src.services.tasks.runner import TaskFailed
from src.services.vms.provisioning import Provisioner
from src.utils.clock import utc_now

log = logging.getLogger(__name__)


class StaleCopies:
    def __init__(self, db: Database, provisioner: Provisioner) -> None:
        self._db = db
        self._provisioner = provisioner

    def clean(self, host: Host) -> int:
        """Remove every stale copy host holds (it answers now); how many were removed. A copy
        that cannot be removed yet stays recorded, and the next sweep tries again.

        Raises: HypervisorUnavailable (the host went away again).
        """
        with self._db.read() as conn:
            stale = evac_dao.stale_on(conn, host.name)
        cleaned = 0
        for row in stale:
            with self._db.read() as conn:
                vm = vm_dao.get(conn, row.vm_id)
            if vm is not None and vm.host == host.name:  # it was moved back here since
                self._mark(row.task_id)
                continue
            try:
                state = host.hypervisor.power_state(row.vm_id)
                host.hypervisor.force_off(row.vm_id)
                host.hypervisor.undefine(row.vm_id)
                self._provisioner.firewall.remove(row.vm_id, host)  # no domain names it now
                if host.row.storage == "pool":  # shared files are the rebuilt VM's own
                    self._provisioner.disks(host).remove(row.vm_id)
            except HypervisorUnavailable:
                raise
            except (HypervisorError, TaskFailed) as exc:
                log.error("the stale copy of vm %s on host %s stays for now: %s", row.vm_id,
                          host.name, exc)
                continue
            self._mark(row.task_id)
            cleaned += 1
            log.warning("removed the stale copy of evacuated vm %s (%s) from host %s (it was "
                        "%s)", row.vm_id, row.vm_name, host.name, state)
        return cleaned

    def _mark(self, task_id: str) -> None:
        with self._db.write() as conn:
            evac_dao.mark_cleaned(conn, task_id, utc_now())
