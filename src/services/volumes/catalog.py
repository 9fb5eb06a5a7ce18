"""VolumeService: accept volume creates, deletes and resizes, and read volumes with their
attachments; the host-side work runs as tasks (src/services/volumes/work.py)."""
from __future__ import annotations

import json
import math
import sqlite3
import uuid
from dataclasses import dataclass, replace
from typing import Any

from src import errors
from src.database import tasks as task_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.services.hosts.capacity import Capacity
from src.services.hosts.registry import HostRegistry
from src.services.images.catalog import ImageService
from src.services.rules import access, quotas
from src.services.rules.access import Principal
from src.services.rules.placement import Demand
from src.services.tasks.runner import Executor, new_task_row
from src.utils.clock import utc_now

GIB = 1024 ** 3


@dataclass(frozen=True)
class VolumeCreate:
    """A validated create body."""

    name: str
    size_gb: int
    image_name: str | None = None
    multiattach: bool = False
    host: str | None = None  # admins pin the volume to a host


@dataclass(frozen=True)
class VolumeView:
    row: volume_dao.VolumeRow
    attachments: list[volume_dao.AttachmentRow]
    task: task_dao.TaskRow | None = None

    @property
    def status(self) -> str:
        """available with attachments shows as in-use (never stored, so never stale)."""
        if self.row.status == "available" and self.attachments:
            return "in-use"
        return self.row.status


def task_payload(args: dict[str, Any]) -> str:
    return json.dumps({"args": args})


class VolumeService:
    def __init__(self, db: Database, hosts: HostRegistry, images: ImageService,
                 capacity: Capacity, executor: Executor) -> None:
        self._db = db
        self._hosts = hosts
        self._images = images
        self._capacity = capacity
        self._executor = executor

    def create(self, request: VolumeCreate, caller: Principal,
               request_id: str | None = None) -> VolumeView:
        """Place the volume (a host with the disk space), record it creating, queue its make.

        Raises: Forbidden (host, for members), ImageNotFoundInRequest, ImageNotActive,
        ImageFileMissing, VolumeTooSmall, NameConflict, QuotaExceeded, InsufficientCapacity,
        HostNotFoundInRequest, HypervisorUnavailable.
        """
        if request.host is not None:
            access.require_admin(caller)
        source = self._source(request, caller)
        hosts = self._hosts.all()
        if request.host is not None and request.host not in {host.name for host in hosts}:
            raise errors.HostNotFoundInRequest(host=request.host)
        capacities = self._capacity.known(hosts)
        now = utc_now()
        row = volume_dao.VolumeRow(
            id=str(uuid.uuid4()), name=request.name, project=caller.project,
            size_gb=request.size_gb, status="creating", multiattach=request.multiattach,
            host="", created_at=now, updated_at=now,
            source_image_id=source.id if source else None,
            source_image_name=source.name if source else None)
        try:
            with self._db.write() as conn:
                quotas.enforce(conn, row.project, {"volumes": 1, "volumes_gb": row.size_gb})
                host, _claim = self._capacity.claim(conn, Demand(cpu=0, ram=0,
                                                                 disk_gb=row.size_gb),
                                                    hosts, capacities, request.host)
                row = replace(row, host=host)
                task = self.task_for(row, "volume_create", request_id, {})
                volume_dao.insert(conn, row)
                task_dao.insert(conn, task)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="volume", name=request.name) from None
        self._executor.submit(task)
        return VolumeView(row, [], task)

    def list(self, caller: Principal, limit: int, marker: str | None) -> list[VolumeView]:
        """The volumes caller sees (admins: all), by creation. Raises: MarkerNotFound."""
        with self._db.read() as conn:
            if marker is not None and not volume_dao.find(conn, marker, access.scope(caller)):
                raise errors.MarkerNotFound(marker=marker)
            rows = volume_dao.list_page(conn, access.scope(caller), limit, marker)
            attached = volume_dao.attachments_of(conn, [row.id for row in rows])
            tasks = task_dao.active_by_volume(conn)
        return [VolumeView(row, attached[row.id], tasks.get(row.id)) for row in rows]

    def show(self, id_or_name: str, caller: Principal, project: str | None = None) -> VolumeView:
        """Raises: VolumeNotFound, AmbiguousName."""
        row = self.find(id_or_name, caller, project)
        with self._db.read() as conn:
            attached = volume_dao.attachments_of(conn, [row.id])[row.id]
            task = task_dao.active_for_volume(conn, row.id)
        return VolumeView(row, attached, task)

    def find(self, id_or_name: str, caller: Principal,
             project: str | None = None) -> volume_dao.VolumeRow:
        """The one volume caller means. Raises: VolumeNotFound, AmbiguousName."""
        scope = access.volume_scope(caller, id_or_name, project)
        with self._db.read() as conn:
            found = volume_dao.find(conn, id_or_name, scope)
        if not found:
            raise errors.VolumeNotFound(volume=id_or_name)
        if len(found) > 1:
            raise errors.AmbiguousName(name=id_or_name, count=len(found),
                                       ids=[row.id for row in found])
        return found[0]

    def delete(self, id_or_name: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Queue the volume's removal, snapshots and all.

        Raises: VolumeNotFound, AmbiguousName, VolumeInUse (attached), VolumeBusy.
        """
        row = self.find(id_or_name, caller, project)
        task = self.task_for(row, "volume_delete", request_id, {})
        with self._db.write() as conn:
            attached = volume_dao.attachments_of(conn, [row.id])[row.id]
            if attached:
                raise errors.VolumeInUse(
                    volume=id_or_name, reason="it is attached to "
                    + ", ".join(repr(a.vm_name) for a in attached) + "; detach it first",
                    vms=[{"vm_id": a.vm_id, "vm_name": a.vm_name} for a in attached])
            self.insert_task(conn, task, id_or_name)
        self._executor.submit(task)
        return task

    def resize(self, id_or_name: str, size_gb: int, caller: Principal,
               request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue growing an available volume to size_gb.

        Raises: VolumeNotFound, AmbiguousName, VolumeCannotShrink, VolumeNotAvailable,
        VolumeInUse, VolumeBusy, QuotaExceeded, InsufficientCapacity.
        """
        row = self.find(id_or_name, caller, project)
        if size_gb <= row.size_gb:
            raise errors.VolumeCannotShrink(size_gb=size_gb, current_gb=row.size_gb)
        host = self._hosts.get(row.host)
        capacities = self._capacity.known([host])
        with self._db.write() as conn:
            current = self.available(conn, row, id_or_name, "be resized")
            if size_gb <= current.size_gb:
                raise errors.VolumeCannotShrink(size_gb=size_gb, current_gb=current.size_gb)
            grow = size_gb - current.size_gb
            task = self.task_for(row, "volume_resize", request_id,
                                 {"size_gb": size_gb, "from_gb": current.size_gb})
            quotas.enforce(conn, row.project, {"volumes_gb": grow})
            self._capacity.claim(conn, Demand(cpu=0, ram=0, disk_gb=grow), [host], capacities,
                                 host.name)
            self.insert_task(conn, task, id_or_name)
            volume_dao.set_size(conn, row.id, size_gb, utc_now())  # held from now on
        self._executor.submit(task)
        return task

    def available(self, conn: sqlite3.Connection, row: volume_dao.VolumeRow, named: str,
                   action: str) -> volume_dao.VolumeRow:
        """The volume as it is now, if it is available and attached nowhere.

        Raises: VolumeNotFound, VolumeNotAvailable, VolumeInUse.
        """
        current = volume_dao.get(conn, row.id)
        if current is None:
            raise errors.VolumeNotFound(volume=named)
        if current.status != "available":
            raise errors.VolumeNotAvailable(volume=named, status=current.status, action=action)
        attached = volume_dao.attachments_of(conn, [row.id])[row.id]
        if attached:
            raise errors.VolumeInUse(volume=named, reason="it is attached to "
                                     + ", ".join(repr(a.vm_name) for a in attached))
        return current

    def _source(self, request: VolumeCreate, caller: Principal) -> Any:
        """The image a volume starts from (checked: active, file there, fits size_gb).

        Raises: ImageNotFoundInRequest, ImageNotActive, ImageFileMissing, ImageInvalid,
        VolumeTooSmall.
        """
        if request.image_name is None:
            return None
        try:
            image = self._images.get(request.image_name, caller)
        except errors.ImageNotFound:
            raise errors.ImageNotFoundInRequest(image=request.image_name) from None
        image, _base, virtual_size = self._images.verify(image)
        minimum = max(1, math.ceil(virtual_size / GIB))
        if request.size_gb < minimum:
            raise errors.VolumeTooSmall(size_gb=request.size_gb, minimum_gb=minimum)
        return image

    def task_for(self, row: volume_dao.VolumeRow, action: str, request_id: str | None,
              args: dict[str, Any], vm_id: str | None = None) -> task_dao.TaskRow:
        return replace(new_task_row(vm_id, action, request_id, row.project, row.host),
                       volume_id=row.id, payload=task_payload(args),
                       executor=self._executor.name)

    @staticmethod
    def insert_task(conn: sqlite3.Connection, task: task_dao.TaskRow, named: str) -> None:
        """Raises: VolumeBusy when the volume (or the VM) has an unfinished task."""
        active = task_dao.active_for_volume(conn, task.volume_id or "")
        if active is not None:
            raise errors.VolumeBusy(volume=named, task_id=active.id, action=active.action)
        try:
            task_dao.insert(conn, task)
        except sqlite3.IntegrityError:  # the unique hold indexes: someone got there first
            raise errors.VolumeBusy(volume=named) from None
