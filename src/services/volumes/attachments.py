"""Attaching volumes to VMs: who may attach what where, decided in one write transaction so
that two racing attaches never both take an exclusive volume."""
from __future__ import annotations

import sqlite3
import string
from dataclasses import dataclass, replace

from src import errors
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.services.rules import access
from src.services.rules.access import Principal
from src.services.tasks.runner import Executor
from src.services.volumes.catalog import VolumeService, task_payload
from src.utils.clock import utc_now

# vda is the root disk and vdb the cloud-init seed: volumes take the letters after them.
DEVICES = tuple(f"vd{letter}" for letter in string.ascii_lowercase[2:])
# A VM's status from which a volume may be attached or detached (hot while it runs).
ATTACHABLE = ("running", "stopped", "paused")


def check_modes(volume: volume_dao.VolumeRow, read_only: bool,
                existing: list[volume_dao.AttachmentRow], named: str) -> None:
    """A read-write attachment is exclusive; a multiattach volume is shared read-only only.

    Raises: MultiattachRequiresReadOnly, VolumeInUse.
    """
    if volume.multiattach and not read_only:
        raise errors.MultiattachRequiresReadOnly(volume=named)
    if not existing:
        return
    if volume.multiattach and read_only and all(other.read_only for other in existing):
        return
    raise errors.VolumeInUse(volume=named, reason="it is attached to " + ", ".join(
        repr(other.vm_name) for other in existing) + (
        "" if volume.multiattach else "; only a multiattach volume is shared"),
        vms=[{"vm_id": other.vm_id, "vm_name": other.vm_name} for other in existing])


def free_device(taken: list[volume_dao.AttachmentRow], vm: str) -> str:
    """Raises: TooManyVolumes."""
    used = {attachment.device for attachment in taken}
    for device in DEVICES:
        if device not in used:
            return device
    raise errors.TooManyVolumes(vm=vm, limit=len(DEVICES))


@dataclass(frozen=True)
class Wanted:
    """A volume a new VM asks for, as found: its row then, and how it is to be attached."""

    row: volume_dao.VolumeRow
    read_only: bool
    named: str


@dataclass(frozen=True)
class Planned:
    """A volume a new VM gets from its first boot."""

    volume_id: str
    device: str
    read_only: bool
    shareable: bool


def find_wanted(db: Database, wanted: list[dict[str, object]], caller: Principal
                ) -> tuple[list[Wanted], str | None]:
    """The volumes a create names, found in the caller's project, and the one host they are on
    (None when none is named).

    Raises: VolumeNotFoundInRequest, BadRequest (named twice), MultiattachRequiresReadOnly,
    VolumesOnSeveralHosts.
    """
    found: list[Wanted] = []
    with db.read() as conn:
        for entry in wanted:
            named, read_only = str(entry["volume"]), bool(entry.get("read_only", False))
            rows = volume_dao.find(conn, named, caller.project)
            if len(rows) != 1:
                raise errors.VolumeNotFoundInRequest(volume=named)
            if rows[0].multiattach and not read_only:
                raise errors.MultiattachRequiresReadOnly(volume=named)
            found.append(Wanted(rows[0], read_only, named))
    if len({entry.row.id for entry in found}) < len(found):
        raise errors.BadRequest(reason="A volume is named twice in volumes.")
    hosts = sorted({entry.row.host for entry in found})
    if len(hosts) > 1:
        raise errors.VolumesOnSeveralHosts(hosts=hosts)
    return found, hosts[0] if hosts else None


def attach_at_create(conn: sqlite3.Connection, vm_id: str, wanted: list[Wanted],
                     now: str) -> tuple[Planned, ...]:
    """Inside the create's transaction (after the VM row): take each volume as it is now.

    Raises: VolumeNotFoundInRequest, VolumeNotAvailable, VolumeBusy, VolumeInUse.
    """
    planned = []
    for device, entry in zip(DEVICES, wanted, strict=False):
        current = volume_dao.get(conn, entry.row.id)
        if current is None:
            raise errors.VolumeNotFoundInRequest(volume=entry.named)
        if current.status != "available":
            raise errors.VolumeNotAvailable(volume=entry.named, status=current.status,
                                            action="be attached")
        # A delete, revert, resize or snapshot queued still reads available: the VM would
        # boot on files that task is about to remove or freeze.
        busy = task_dao.active_for_volume(conn, current.id, volume_tasks_only=True)
        if busy is not None:
            raise errors.VolumeBusy(volume=entry.named, task_id=busy.id, action=busy.action)
        check_modes(current, entry.read_only,
                    volume_dao.attachments_of(conn, [current.id])[current.id], entry.named)
        volume_dao.attach(conn, volume_dao.AttachmentRow(
            volume_id=current.id, vm_id=vm_id, read_only=entry.read_only, device=device,
            status="attaching", created_at=now))
        planned.append(Planned(current.id, device, entry.read_only, current.multiattach))
    return tuple(planned)


def refuse_busy_volumes(conn: sqlite3.Connection, vm_id: str) -> None:
    """Before a VM starts: none of the volumes it writes has a task under way (a queued
    snapshot would freeze the layer its guest then boots and writes).

    Raises: VolumeBusy.
    """
    for attachment in volume_dao.attachments_for_vms(conn, [vm_id]).get(vm_id, []):
        busy = task_dao.active_for_volume(conn, attachment.volume_id, volume_tasks_only=True)
        if not attachment.read_only and busy is not None:
            raise errors.VolumeBusy(volume=attachment.volume_name, task_id=busy.id,
                                    action=busy.action)


class AttachmentService:
    def __init__(self, db: Database, volumes: VolumeService, executor: Executor) -> None:
        self._db = db
        self._volumes = volumes
        self._executor = executor

    def attach(self, vm: str, volume: str, read_only: bool, caller: Principal,
               request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue attaching volume to vm (hot-plugged when the VM runs).

        Raises: VmNotFound, VolumeNotFoundInRequest, AmbiguousName, InvalidState,
        VolumeNotAvailable, VolumeOnOtherHost, MultiattachRequiresReadOnly, VolumeInUse,
        TooManyVolumes, VmBusy, VolumeBusy.
        """
        vm_row = self._vm(vm, caller, project)
        try:
            volume_row = self._volumes.find(volume, caller, vm_row.project)
        except errors.VolumeNotFound:
            raise errors.VolumeNotFoundInRequest(volume=volume) from None
        if volume_row.multiattach and not read_only:
            raise errors.MultiattachRequiresReadOnly(volume=volume)
        task = self._volumes.task_for(volume_row, "attach", request_id, {}, vm_id=vm_row.id)
        with self._db.write() as conn:
            current_vm, current = self._current(conn, vm_row, volume_row, vm, volume)
            if current_vm.status not in ATTACHABLE:
                raise errors.InvalidState(action="attach a volume to", status=current_vm.status,
                                          allowed=list(ATTACHABLE))
            if current.status != "available":
                raise errors.VolumeNotAvailable(volume=volume, status=current.status,
                                                action="be attached")
            if current.host != current_vm.host:
                raise errors.VolumeOnOtherHost(volume=volume, volume_host=current.host,
                                               vm_host=current_vm.host)
            check_modes(current, read_only, volume_dao.attachments_of(conn, [current.id])[
                current.id], volume)
            device = free_device(volume_dao.attachments_for_vms(conn, [current_vm.id]).get(
                current_vm.id, []), vm)
            task = replace(task, payload=task_payload({"device": device}))
            self._hold(conn, task, vm, volume)
            volume_dao.attach(conn, volume_dao.AttachmentRow(
                volume_id=current.id, vm_id=current_vm.id, read_only=read_only,
                device=device, status="attaching", created_at=utc_now()))
        self._executor.submit(task)
        return task

    def detach(self, vm: str, volume: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Queue detaching volume from vm (hot-unplugged when the VM runs).

        Raises: VmNotFound, VolumeNotAttached, AmbiguousName, InvalidState, VmBusy, VolumeBusy.
        """
        vm_row = self._vm(vm, caller, project)
        try:
            volume_row = self._volumes.find(volume, caller, vm_row.project)
        except errors.VolumeNotFound:
            raise errors.VolumeNotAttached(volume=volume, vm=vm) from None
        task = self._volumes.task_for(volume_row, "detach", request_id, {}, vm_id=vm_row.id)
        with self._db.write() as conn:
            current_vm, current = self._current(conn, vm_row, volume_row, vm, volume)
            attached = volume_dao.attachment(conn, current.id, current_vm.id)
            if attached is None:
                raise errors.VolumeNotAttached(volume=volume, vm=vm)
            if current_vm.status not in ATTACHABLE:
                raise errors.InvalidState(action="detach a volume from",
                                          status=current_vm.status, allowed=list(ATTACHABLE))
            task = replace(task, payload=task_payload({"device": attached.device}))
            self._hold(conn, task, vm, volume)
            volume_dao.set_attachment_status(conn, current.id, current_vm.id, "detaching")
        self._executor.submit(task)
        return task

    def _vm(self, vm: str, caller: Principal, project: str | None) -> vm_dao.VmRow:
        """Raises: VmNotFound, AmbiguousName."""
        with self._db.read() as conn:
            found = vm_dao.find(conn, vm, access.vm_scope(caller, vm, project))
        if not found:
            raise errors.VmNotFound(vm=vm)
        if len(found) > 1:
            raise errors.AmbiguousName(name=vm, count=len(found),
                                       ids=[row.id for row in found])
        return found[0]

    @staticmethod
    def _current(conn: sqlite3.Connection, vm_row: vm_dao.VmRow,
                 volume_row: volume_dao.VolumeRow, vm: str, volume: str
                 ) -> tuple[vm_dao.VmRow, volume_dao.VolumeRow]:
        """Both rows as they are inside the transaction. Raises: VmNotFound, VolumeNotFound."""
        current_vm = vm_dao.get(conn, vm_row.id)
        if current_vm is None:
            raise errors.VmNotFound(vm=vm)
        current = volume_dao.get(conn, volume_row.id)
        if current is None:
            raise errors.VolumeNotFound(volume=volume)
        return current_vm, current

    @staticmethod
    def _hold(conn: sqlite3.Connection, task: task_dao.TaskRow, vm: str, volume: str) -> None:
        """Insert the task holding both the VM and the volume. Raises: VmBusy, VolumeBusy."""
        active = task_dao.active_for_vm(conn, task.vm_id or "")
        if active is not None:
            raise errors.VmBusy(vm=vm, task_id=active.id, action=active.action)
        active = task_dao.active_for_volume(conn, task.volume_id or "", volume_tasks_only=True)
        if active is not None:
            raise errors.VolumeBusy(volume=volume, task_id=active.id, action=active.action)
        try:
            task_dao.insert(conn, task)
        except sqlite3.IntegrityError:
            raise errors.VolumeBusy(volume=volume) from None
