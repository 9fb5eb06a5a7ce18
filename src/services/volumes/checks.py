"""What the reconciler checks of volumes on each host it sweeps: a volume whose file vanished,
or a disk that left a domain behind the API's back, turns the volume to error with the reason
(never silently). Volumes busy with a task are left to it."""
from __future__ import annotations

import logging

from src.database import tasks as task_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.errors import DomainNotFound, HypervisorError
from src.services.hosts.registry import Host
from src.services.volumes.layers import VolumeLayers
from src.utils.clock import utc_now

log = logging.getLogger(__name__)
FILE_MISSING = "volume_file_missing"
DISK_LEFT = "volume_detached_outside"


class VolumeChecks:
    def __init__(self, db: Database, layers: VolumeLayers) -> None:
        self._db = db
        self._layers = layers

    def check_host(self, host: Host) -> list[str]:
        """Check the host's volumes against its pool and domains; the ids turned to error.
        Two libvirt calls for the pool, one per VM with volumes."""
        with self._db.read() as conn:
            volumes = [row for row in volume_dao.list_on(conn, host.name)
                       if row.status == "available" and row.top_layer]
            busy = task_dao.active_by_volume(conn)
            attached = volume_dao.attachments_of(conn, [row.id for row in volumes])
        volumes = [row for row in volumes if row.id not in busy]
        if not volumes:
            return []
        try:
            present = set(host.hypervisor.pools.volumes(self._layers.pool_of(host)))
        except HypervisorError as exc:
            log.warning("volumes of host %s not checked: %s", host.name, exc)
            return []
        failed = []
        for row in volumes:
            if row.top_layer not in present:
                failed.append(self._fail(row, FILE_MISSING,
                                         f"Its file {row.top_layer} vanished from the host."))
        held = self._disks_of_vms(host, [entry for row in volumes if row.id not in failed
                                         for entry in attached[row.id]
                                         if entry.status == "attached"])
        for row in volumes:
            for entry in attached[row.id]:
                if row.id in failed or entry.status != "attached":
                    continue
                devices = held.get(entry.vm_id)
                if devices is not None and entry.device not in devices:
                    with self._db.write() as conn:
                        volume_dao.detach(conn, row.id, entry.vm_id)
                    failed.append(self._fail(row, DISK_LEFT, (
                        f"Its disk {entry.device} left VM {entry.vm_name!r} outside the API; "
                        "the attachment is gone. Check the data, then delete or keep it.")))
        return failed

    def _disks_of_vms(self, host: Host, entries: list[volume_dao.AttachmentRow]
                      ) -> dict[str, set[str]]:
        """The disk targets each VM's definition holds (None-free: VMs not read are absent)."""
        held: dict[str, set[str]] = {}
        for vm_id in {entry.vm_id for entry in entries}:
            try:
                held[vm_id] = {disk.target_dev for disk in
                               host.hypervisor.disk_targets(vm_id, live=False)}
            except DomainNotFound:
                continue  # its VM's own checks say what happened to the domain
            except HypervisorError as exc:
                log.warning("disks of %s not checked: %s", vm_id, exc)
        return held

    def _fail(self, row: volume_dao.VolumeRow, code: str, message: str) -> str:
        log.error("volume %s (%s): %s", row.id, row.name, message)
        with self._db.write() as conn:
            volume_dao.set_status(conn, row.id, "error", utc_now(), (code, message),
                                  only_from=("available",))
        return row.id
