"""ComputeService: accept VM create/delete requests, run them as tasks, merge DB and live state."""
from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from dataclasses import dataclass

from src import errors
from src.database import images as image_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services.images import ImageService
from src.services.provisioning import GIB, BuildPlan, Provisioner
from src.services.tasks import TaskFailed, TaskRunner, new_task_row
from src.utils.clock import utc_now
from src.utils.libvirt_host import Hypervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmView:
    """A VM as the API shows it: its row, live power state and unfinished task."""

    row: vm_dao.VmRow
    power_state: str
    task: task_dao.TaskRow | None


@dataclass(frozen=True)
class CreateRequest:
    name: str
    cpu: int
    ram: int
    image_name: str
    disk_gb: int | None = None


class ComputeService:
    def __init__(self, db: Database, hypervisor: Hypervisor, images: ImageService,
                 provisioner: Provisioner, runner: TaskRunner) -> None:
        self._db = db
        self._hypervisor = hypervisor
        self._images = images
        self._provisioner = provisioner
        self._runner = runner

    def create(self, request: CreateRequest) -> VmView:
        """Record the VM as building and queue its build.

        Raises: ImageNotFoundInRequest, ImageFileMissing, DiskTooSmall, NameConflict.
        """
        try:
            image = self._images.get(request.image_name)
        except errors.ImageNotFound:
            raise errors.ImageNotFoundInRequest(image=request.image_name) from None
        base = self._images.path_of(image.file)
        if not base.is_file():
            raise errors.ImageFileMissing(file=image.file, image=image.name)
        disk_gb = self._disk_gb(image, request.disk_gb)
        if self._hypervisor.name_taken(request.name):
            raise errors.NameConflict(kind="domain", name=request.name)
        now = utc_now()
        row = vm_dao.VmRow(id=str(uuid.uuid4()), name=request.name, cpu=request.cpu,
                           ram=request.ram, disk_gb=disk_gb, image_id=image.id,
                           image_name=image.name, status="building", vnc_port=None,
                           error_code=None, error_message=None, created_at=now, updated_at=now)
        task = new_task_row(row.id, "create")
        try:
            with self._db.write() as conn:
                vm_dao.insert(conn, row)
                task_dao.insert(conn, task)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="VM", name=request.name) from None
        plan = BuildPlan(vm_id=row.id, name=row.name, cpu=row.cpu, ram=row.ram, disk_gb=disk_gb,
                         image_name=image.name, base_path=base, base_format=image.format)
        self._runner.submit(task, lambda: self._build(plan))
        return VmView(row=row, power_state="missing", task=task)

    def get(self, id_or_name: str) -> VmView:
        """Raises: VmNotFound."""
        with self._db.read() as conn:
            row = vm_dao.get(conn, id_or_name)
            task = task_dao.active_for_vm(conn, row.id) if row else None
        if row is None:
            raise errors.VmNotFound(vm=id_or_name)
        return VmView(row=row, power_state=self._hypervisor.power_state(row.id), task=task)

    def list(self, *, status: str | None = None, name: str | None = None, limit: int = 1000,
             marker: str | None = None) -> list[VmView]:
        """A page of VMs with live state from one bulk libvirt call. Raises: MarkerNotFound."""
        with self._db.read() as conn:
            after = vm_dao.get(conn, marker) if marker is not None else None
            if marker is not None and (after is None or after.id != marker):
                raise errors.MarkerNotFound(marker=marker)
            rows = vm_dao.list_page(conn, status=status, name=name, after=after, limit=limit)
            active = task_dao.active_by_vm(conn) if rows else {}
        states = self._hypervisor.power_states() if rows else {}
        return [VmView(row=row, power_state=states.get(row.id, "missing"), task=active.get(row.id))
                for row in rows]

    def delete(self, id_or_name: str) -> task_dao.TaskRow:
        """Queue the VM's removal; a delete already pending is returned as is. Raises: VmNotFound."""
        with self._db.write() as conn:
            row = vm_dao.get(conn, id_or_name)
            if row is None:
                raise errors.VmNotFound(vm=id_or_name)
            pending = task_dao.active_for_vm(conn, row.id)
            if pending is not None and pending.action == "delete":
                return pending
            task = new_task_row(row.id, "delete")
            task_dao.insert(conn, task)
            vm_dao.set_status(conn, row.id, "deleting", utc_now())
        if pending is not None:
            self._runner.cancel(pending.id)  # a build not yet started never runs
        self._runner.submit(task, lambda: self._delete(row.id))
        return task

    def recover_interrupted(self) -> int:
        """Fail tasks a restart cut short and undo their half-made VMs; return how many."""
        with self._db.read() as conn:
            interrupted = task_dao.list_active(conn)
        for task in interrupted:
            message = "The server stopped before this task finished."
            if task.action == "create":
                try:
                    self._provisioner.tear_down(task.vm_id)
                except TaskFailed as exc:
                    log.error("cleanup of interrupted build %s failed: %s", task.vm_id, exc)
            with self._db.write() as conn:
                task_dao.finish(conn, task.id, utc_now(), ("interrupted", message))
                vm_dao.set_status(conn, task.vm_id, "error", utc_now(), ("interrupted", message))
        return len(interrupted)

    def _disk_gb(self, image: image_dao.ImageRow, requested: int | None) -> int:
        virtual_size = self._images.virtual_size(image)
        minimum = max(1, math.ceil(virtual_size / GIB))
        if requested is None:
            return minimum
        if requested < minimum:
            raise errors.DiskTooSmall(disk_gb=requested, minimum_gb=minimum)
        return requested

    def _build(self, plan: BuildPlan) -> None:
        def mark_running(vnc_port: int | None) -> None:
            with self._db.write() as conn:
                now = utc_now()
                vm_dao.set_vnc_port(conn, plan.vm_id, vnc_port, now)
                vm_dao.set_status(conn, plan.vm_id, "running", now, only_from="building")

        try:
            self._provisioner.build(plan, mark_running)
        except TaskFailed as exc:
            with self._db.write() as conn:
                vm_dao.set_status(conn, plan.vm_id, "error", utc_now(), (exc.code, exc.message),
                                  only_from="building")
            raise

    def _delete(self, vm_id: str) -> None:
        try:
            self._provisioner.tear_down(vm_id)
        except TaskFailed as exc:
            with self._db.write() as conn:
                vm_dao.set_status(conn, vm_id, "error", utc_now(), (exc.code, exc.message))
            raise
        with self._db.write() as conn:
            vm_dao.delete(conn, vm_id)
