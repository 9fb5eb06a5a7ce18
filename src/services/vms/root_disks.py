"""A stopped VM's root disk: snapshots, reverts to them, and images made from it.

Like a volume's, the root disk is a chain of qcow2 layers the database knows: a snapshot
freezes the disk the domain boots and stacks a new one on it (the domain is pointed at it), a
revert stacks a new one on the snapshot's layer. An image is the disk flattened (no backing
file) into a new project image, landed like an upload: hashed, checked, counted in images_gb.
"""
from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace

from src import errors
from src.database import images as image_dao
from src.database import snapshots as snapshot_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.services.hosts.registry import Host, HostRegistry
from src.services.images.catalog import PARTIAL_PREFIX, ImageService
from src.services.images.files import Intake, Landing
from src.services.rules import access, quotas
from src.services.rules.access import Principal
from src.services.tasks.runner import Executor, TaskFailed, new_task_row
from src.services.vms.disks import Disks
from src.services.vms.provisioning import Provisioner
from src.services.volumes.catalog import task_payload
from src.services.volumes.layers import (
    next_generation,
    prune_layers,
    record_layer,
    refuse_beyond_limit,
)
from src.utils.clock import utc_now

ROOT_DEVICE = "vda"


class RootDisks:
    """Accept snapshot, revert, snapshot-delete and image requests on a VM's root disk."""

    def __init__(self, db: Database, images: ImageService, executor: Executor) -> None:
        self._db = db
        self._images = images
        self._executor = executor

    def snapshot(self, vm: str, name: str, caller: Principal, request_id: str | None = None,
                 project: str | None = None
                 ) -> tuple[snapshot_dao.SnapshotRow, task_dao.TaskRow]:
        """Raises: VmNotFound, AmbiguousName, VmNotStopped, TooManySnapshots, NameConflict,
        VmBusy."""
        row = self._vm(vm, caller, project)
        snapshot = snapshot_dao.SnapshotRow(
            id=str(uuid.uuid4()), name=name, owner=row.id, owner_kind="vm", project=row.project,
            layer=None, size_gb=row.disk_gb, status="creating", created_at=utc_now())
        task = self._task(row, "vm_snapshot", request_id, {"snapshot_id": snapshot.id})
        with self._db.write() as conn:
            self._stopped(conn, row, vm)
            refuse_beyond_limit(conn, row.id, vm)
            try:
                snapshot_dao.insert(conn, snapshot)
            except sqlite3.IntegrityError:
                raise errors.NameConflict(kind="snapshot", name=name) from None
            self._hold(conn, task, vm)
        self._executor.submit(task)
        return snapshot, task

    def list(self, vm: str, caller: Principal,
             project: str | None = None) -> list[snapshot_dao.SnapshotRow]:
        row = self._vm(vm, caller, project)
        with self._db.read() as conn:
            return snapshot_dao.list_of(conn, row.id)

    def revert(self, vm: str, snapshot: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Raises: VmNotFound, AmbiguousName, SnapshotNotFoundInRequest, SnapshotNotAvailable,
        VmNotStopped, VmBusy."""
        row = self._vm(vm, caller, project)
        with self._db.write() as conn:
            found = self._snapshot(conn, row.id, snapshot, errors.SnapshotNotFoundInRequest)
            if found.status != "available":
                raise errors.SnapshotNotAvailable(snapshot=snapshot, status=found.status)
            self._stopped(conn, row, vm)
            task = self._task(row, "vm_revert", request_id, {"snapshot_id": found.id})
            self._hold(conn, task, vm)
        self._executor.submit(task)
        return task

    def delete_snapshot(self, vm: str, snapshot: str, caller: Principal,
                        request_id: str | None = None,
                        project: str | None = None) -> task_dao.TaskRow:
        """Raises: VmNotFound, AmbiguousName, SnapshotNotFound, VmBusy."""
        row = self._vm(vm, caller, project)
        with self._db.write() as conn:
            found = self._snapshot(conn, row.id, snapshot, errors.SnapshotNotFound)
            task = self._task(row, "snapshot_delete", request_id, {"snapshot_id": found.id})
            self._hold(conn, task, vm)
            snapshot_dao.set_status(conn, found.id, "deleting")
        self._executor.submit(task)
        return task

    def image(self, vm: str, name: str, caller: Principal, request_id: str | None = None,
              project: str | None = None) -> tuple[image_dao.ImageRow, task_dao.TaskRow]:
        """A new private image of the VM's project, filled by a task from its root disk.

        Raises: VmNotFound, AmbiguousName, VmNotStopped, NameConflict, VmBusy, QuotaExceeded.
        """
        row = self._vm(vm, caller, project)
        image_id = str(uuid.uuid4())
        task = replace(self._task(row, "vm_image", request_id, {}), image_id=image_id)
        image = image_dao.ImageRow(
            # origin import: a task fills the file, which is the image's own (as an import's).
            id=image_id, name=name, file=f"vm-{image_id}.qcow2", format="qcow2",
            size_bytes=None, virtual_size_bytes=None, created_at=utc_now(), project=row.project,
            visibility="private", status="importing", origin="import", bytes_done=0,
            task_id=task.id)
        with self._db.write() as conn:
            self._stopped(conn, row, vm)
            quotas.enforce(conn, row.project, {"images": 1})  # as an upload's or import's
            try:
                image_dao.insert(conn, image)
            except sqlite3.IntegrityError:
                raise errors.NameConflict(kind="image", name=name) from None
            self._hold(conn, task, vm)
        self._executor.submit(task)
        return image, task

    def _vm(self, vm: str, caller: Principal, project: str | None) -> vm_dao.VmRow:
        with self._db.read() as conn:
            found = vm_dao.find(conn, vm, access.vm_scope(caller, vm, project))
        if not found:
            raise errors.VmNotFound(vm=vm)
        if len(found) > 1:
            raise errors.AmbiguousName(name=vm, count=len(found),
                                       ids=[row.id for row in found])
        return found[0]

    @staticmethod
    def _stopped(conn: sqlite3.Connection, row: vm_dao.VmRow, vm: str) -> None:
        """Raises: VmNotFound, VmNotStopped."""
        current = vm_dao.get(conn, row.id)
        if current is None:
            raise errors.VmNotFound(vm=vm)
        if current.status != "stopped":
            raise errors.VmNotStopped(vm=vm, status=current.status)

    @staticmethod
    def _snapshot(conn: sqlite3.Connection, vm_id: str, snapshot: str,
                  missing: type[errors.ApiError]) -> snapshot_dao.SnapshotRow:
        found = snapshot_dao.find(conn, vm_id, snapshot)
        if found is None:
            raise missing(snapshot=snapshot)
        return found

    def _task(self, row: vm_dao.VmRow, action: str, request_id: str | None,
              args: dict[str, str]) -> task_dao.TaskRow:
        return replace(new_task_row(row.id, action, request_id, row.project, row.host),
                       payload=task_payload(args), executor=self._executor.name)

    @staticmethod
    def _hold(conn: sqlite3.Connection, task: task_dao.TaskRow, vm: str) -> None:
        active = task_dao.active_for_vm(conn, task.vm_id or "")
        if active is not None:
            raise errors.VmBusy(vm=vm, task_id=active.id, action=active.action)
        try:
            task_dao.insert(conn, task)
        except sqlite3.IntegrityError:
            raise errors.VmBusy(vm=vm) from None


class RootDiskWork:
    """The host side of those tasks."""

    def __init__(self, db: Database, hosts: HostRegistry, provisioner: Provisioner,
                 intake: Intake) -> None:
        self._db = db
        self._hosts = hosts
        self._provisioner = provisioner
        self._intake = intake

    def run(self, action: str, vm_id: str, image_id: str | None, args: dict[str, str]) -> None:
        """Raises: TaskFailed, HypervisorUnavailable."""
        if action == "vm_snapshot":
            self.snapshot(vm_id, args["snapshot_id"])
        elif action == "vm_revert":
            self.revert(vm_id, args["snapshot_id"])
        elif action == "snapshot_delete":
            self.delete_snapshot(vm_id, args["snapshot_id"])
        else:
            self.image(vm_id, image_id or "")

    def snapshot(self, vm_id: str, snapshot_id: str) -> None:
        row, host, disks = self._vm(vm_id)
        with self._db.read() as conn:
            snapshot = snapshot_dao.get(conn, snapshot_id)
            frozen = snapshot_dao.root_top(conn, vm_id) or disks.root_layer(vm_id)
            known = {layer.name for layer in snapshot_dao.layers_of(conn, vm_id)}
        if snapshot is None or snapshot.status == "available":
            return
        if frozen not in known:  # the disk it was built with becomes the chain's bottom
            record_layer(self._db, host.name, vm_id, frozen, None, row.disk_gb)
        try:
            top = self._stack(host, disks, row, frozen)
        except HypervisorUnavailable:
            raise
        except Exception as exc:
            with self._db.write() as conn:
                snapshot_dao.delete(conn, snapshot_id)
            raise _failed(exc, "snapshot_failed", "The snapshot could not be made") from exc
        with self._db.write() as conn:
            snapshot_dao.made(conn, snapshot_id, frozen)
            snapshot_dao.set_root_top(conn, vm_id, top)

    def revert(self, vm_id: str, snapshot_id: str) -> None:
        row, host, disks = self._vm(vm_id)
        with self._db.read() as conn:
            snapshot = snapshot_dao.get(conn, snapshot_id)
        if snapshot is None or snapshot.layer is None:
            raise TaskFailed("snapshot_gone", "The snapshot was removed before the revert ran.")
        try:
            top = self._stack(host, disks, row, snapshot.layer)
        except HypervisorUnavailable:
            raise
        except Exception as exc:
            raise _failed(exc, "revert_failed", "The disk could not be reverted") from exc
        with self._db.write() as conn:
            snapshot_dao.set_root_top(conn, vm_id, top)
        self._prune(vm_id, top, disks)

    def delete_snapshot(self, vm_id: str, snapshot_id: str) -> None:
        _row, _host, disks = self._vm(vm_id)
        with self._db.write() as conn:
            snapshot_dao.delete(conn, snapshot_id)
            top = snapshot_dao.root_top(conn, vm_id) or disks.root_layer(vm_id)
        self._prune(vm_id, top, disks)

    def image(self, vm_id: str, image_id: str) -> None:
        """Flatten the root disk into the image's file, landed and checked like an upload."""
        row, _host, disks = self._vm(vm_id)
        with self._db.read() as conn:
            image = image_dao.by_id(conn, image_id)
            top = snapshot_dao.root_top(conn, vm_id) or disks.root_layer(vm_id)
        if image is None or image.status != "importing":
            return  # deleted meanwhile, or made by an earlier delivery
        flat = self._intake.images.images_dir / f"{PARTIAL_PREFIX}{image.id}-flat"

        def fill(landing: Landing) -> None:
            try:
                disks.flatten(vm_id, top, row.disk_gb, flat)
                with flat.open("rb") as source:
                    landing.pour(source)
            except (HypervisorError, OSError) as exc:
                raise TaskFailed("image_failed", f"The disk could not be read: {exc}") from exc
            finally:
                flat.unlink(missing_ok=True)
        try:
            self._intake.land(image, "importing", fill, None)
        except errors.ApiError as exc:  # too large, over images_gb, ...: the image says so
            raise TaskFailed(exc.code, exc.message) from exc

    def expire(self, action: str, vm_id: str, image_id: str | None,
               args: dict[str, str], reason: tuple[str, str]) -> None:
        """A task that never ran: its snapshot row goes, its image fails."""
        with self._db.write() as conn:
            if action == "vm_snapshot":
                snapshot_dao.delete(conn, args["snapshot_id"])
            elif action == "snapshot_delete":
                snapshot_dao.set_status(conn, args["snapshot_id"], "available")
            elif action == "vm_image" and image_id:
                image_dao.set_status(conn, image_id, "error", ("importing",), reason)

    def _stack(self, host: Host, disks: Disks, row: vm_dao.VmRow, parent: str) -> str:
        """A new top on parent, booted by the domain from now on; its name. On failure the
        domain boots what it booted and the new file is gone."""
        name = disks.layer_name(row.id, next_generation(self._db, row.id))
        path = disks.stack(row.id, parent, name, row.disk_gb)
        try:
            host.hypervisor.set_disk_source(row.id, ROOT_DEVICE, path)
        except BaseException:
            disks.remove_layer(row.id, name)
            raise
        record_layer(self._db, host.name, row.id, name, parent, row.disk_gb)
        return name

    def _prune(self, vm_id: str, top: str, disks: Disks) -> None:
        try:
            prune_layers(self._db, vm_id, top, lambda name: disks.remove_layer(vm_id, name))
        except (HypervisorError, OSError) as exc:
            raise TaskFailed("layer_removal_failed", f"A layer could not be removed: {exc}"
                             ) from exc

    def _vm(self, vm_id: str) -> tuple[vm_dao.VmRow, Host, Disks]:
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
        if row is None:
            raise TaskFailed("vm_gone", "The VM was removed while this task waited.")
        host = self._hosts.get(row.host)
        return row, host, self._provisioner.disks(host)


def _failed(exc: Exception, code: str, what: str) -> TaskFailed:
    return exc if isinstance(exc, TaskFailed) else TaskFailed(code, f"{what}: {exc}")

