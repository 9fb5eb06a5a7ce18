"""Snapshots of volumes and reverts to them, accepted here and made as tasks. A snapshot's
bytes are a frozen layer of the volume's chain; the database, not libvirt, knows the chain."""
from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace

from src import errors
from src.database import snapshots as snapshot_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.services.rules.access import Principal
from src.services.tasks.runner import Executor
from src.services.volumes.catalog import VolumeService
from src.services.volumes.layers import refuse_beyond_limit
from src.utils.clock import utc_now

# A VM whose domain may write its disks: a read-write attachment to it cannot be frozen.
WRITING = ("running", "paused", "building")


class VolumeSnapshots:
    def __init__(self, db: Database, volumes: VolumeService, executor: Executor) -> None:
        self._db = db
        self._volumes = volumes
        self._executor = executor

    def create(self, volume: str, name: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> tuple[snapshot_dao.SnapshotRow, task_dao.TaskRow]:
        """Queue a snapshot of the volume.

        Raises: VolumeNotFound, AmbiguousName, VolumeNotAvailable, VolumeInUse (attached
        read-write to a running VM), VmBusy (attached read-write to a VM with a task under
        way), TooManySnapshots, NameConflict, VolumeBusy.
        """
        row = self._volumes.find(volume, caller, project)
        snapshot = snapshot_dao.SnapshotRow(
            id=str(uuid.uuid4()), name=name, owner=row.id, owner_kind="volume",
            project=row.project, layer=None, size_gb=row.size_gb, status="creating",
            created_at=utc_now())
        task = self._volumes.task_for(row, "volume_snapshot", request_id, {"snapshot_id": snapshot.id})
        with self._db.write() as conn:
            current = self._usable(conn, row, volume, "be snapshotted")
            writers = [attachment for attachment in volume_dao.attachments_of(
                conn, [row.id])[row.id] if not attachment.read_only
                and _may_write(vm_dao.get(conn, attachment.vm_id))]
            if writers:
                raise errors.VolumeInUse(volume=volume, reason=(
                    f"VM {writers[0].vm_name!r} runs (or, in error, may still run) with it "
                    "attached read-write; stop the VM or detach the volume first"))
            for attachment in volume_dao.attachments_of(conn, [row.id])[row.id]:
                # A stopped VM whose start (or other task) is under way may boot on the layer
                # this snapshot would freeze: its guest would write a frozen layer.
                busy = task_dao.active_for_vm(conn, attachment.vm_id)
                if not attachment.read_only and busy is not None:
                    raise errors.VmBusy(vm=attachment.vm_name, task_id=busy.id,
                                        action=busy.action)
            refuse_beyond_limit(conn, row.id, volume)
            try:
                snapshot_dao.insert(conn, replace(snapshot, size_gb=current.size_gb))
            except sqlite3.IntegrityError:
                raise errors.NameConflict(kind="snapshot", name=name) from None
            self._volumes.insert_task(conn, task, volume)
        self._executor.submit(task)
        return snapshot, task

    def list(self, volume: str, caller: Principal,
             project: str | None = None) -> list[snapshot_dao.SnapshotRow]:
        """Raises: VolumeNotFound, AmbiguousName."""
        row = self._volumes.find(volume, caller, project)
        with self._db.read() as conn:
            return snapshot_dao.list_of(conn, row.id)

    def delete(self, volume: str, snapshot: str, caller: Principal,
               request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue removing one snapshot (its layer goes once nothing is backed by it).

        Raises: VolumeNotFound, AmbiguousName, SnapshotNotFound, VolumeBusy.
        """
        row = self._volumes.find(volume, caller, project)
        with self._db.write() as conn:
            found = snapshot_dao.find(conn, row.id, snapshot)
            if found is None:
                raise errors.SnapshotNotFound(snapshot=snapshot)
            task = self._volumes.task_for(row, "snapshot_delete", request_id, {"snapshot_id": found.id})
            self._volumes.insert_task(conn, task, volume)
            snapshot_dao.set_status(conn, found.id, "deleting")
        self._executor.submit(task)
        return task

    def revert(self, volume: str, snapshot: str, caller: Principal,
               request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue bringing the volume's content back to the snapshot's.

        Raises: VolumeNotFound, AmbiguousName, SnapshotNotFoundInRequest,
        SnapshotNotAvailable, VolumeNotAvailable, VolumeInUse (attached anywhere), VolumeBusy.
        """
        row = self._volumes.find(volume, caller, project)
        with self._db.write() as conn:
            found = snapshot_dao.find(conn, row.id, snapshot)
            if found is None:
                raise errors.SnapshotNotFoundInRequest(snapshot=snapshot)
            if found.status != "available":
                raise errors.SnapshotNotAvailable(snapshot=snapshot, status=found.status)
            self._volumes.available(conn, row, volume, "be reverted")
            task = self._volumes.task_for(row, "volume_revert", request_id, {"snapshot_id": found.id})
            self._volumes.insert_task(conn, task, volume)
        self._executor.submit(task)
        return task

    def _usable(self, conn: sqlite3.Connection, row: volume_dao.VolumeRow, named: str,
                action: str) -> volume_dao.VolumeRow:
        """Raises: VolumeNotFound, VolumeNotAvailable."""
        current = volume_dao.get(conn, row.id)
        if current is None:
            raise errors.VolumeNotFound(volume=named)
        if current.status != "available":
            raise errors.VolumeNotAvailable(volume=named, status=current.status, action=action)
        return current


def _may_write(vm: vm_dao.VmRow | None) -> bool:
    """Whether the VM's guest may be writing its disks: it runs, or it is in error with its
    domain perhaps still there (a crashed or hypervisor-paused guest, a task that failed after
    the guest came up: a start resumes the same process, with the layer it has open)."""
    if vm is None:
        return False
    return vm.status in WRITING or (vm.status == "error" and vm.error_code != "domain_missing")
