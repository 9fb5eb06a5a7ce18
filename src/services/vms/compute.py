"""ComputeService: accept VM creates, deletes and power actions, and queue their work as tasks."""
from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from src import errors
from src.database import capacity_waits as wait_dao
from src.database import flavors as flavor_dao
from src.database import gpus as gpu_dao
from src.database import images as image_dao
from src.database import reservations as reservation_dao
from src.database import tasks as task_dao
from src.database import vm_nics as nic_dao
from src.database import vm_terms as terms_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.domain_xml import domain_name
from src.hypervisor.domains import MISSING
from src.services.accounts.keypairs import keys_of
from src.services.hosts import backfill
from src.services.hosts.capacity import Capacity
from src.services.hosts.registry import Host, HostRegistry
from src.services.images.catalog import ImageService
from src.services.rules import access, lifecycle, quotas, seeds
from src.services.rules.access import Principal
from src.services.rules.fair_order import could_hold
from src.services.rules.placement import Claim, Demand, HostCapacity
from src.services.security import groups as security_groups
from src.services.tasks.runner import Executor, new_task_row
from src.services.vms import nics, preemption, waiting
from src.services.vms.build_record import (
    BuildOptions,
    CloudInit,
    Nic,
    VolumeDisk,
    hold_partitions,
    record_for,
    waiting_payload,
)
from src.services.vms.flavors import demand_of
from src.services.vms.power import PowerOptions
from src.services.vms.provisioning import GIB
from src.services.vms.reads import Terms, VmView, row_and_task, terms_of, view
from src.services.vms.waiting import UNPLACED
from src.services.volumes import attachments
from src.utils.clock import utc_after, utc_now
from src.vocabulary import OPEN_RESERVATION


@dataclass(frozen=True)
class CreateRequest:
    """A validated create body: either flavor, or cpu and ram (the schema says which)."""

    name: str
    image_name: str
    cpu: int | None = None
    ram: int | None = None
    disk_gb: int | None = None
    flavor: str | None = None
    ssh_keys: tuple[str, ...] | list[str] = ()
    key_names: tuple[str, ...] | list[str] = ()  # the project's keypairs, beside ssh_keys
    user_data: str | None = None
    host: str | None = None  # admins may pin the VM to a host
    volumes: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()  # {volume, read_only?}
    wait_for_capacity: bool = False  # fits nowhere now: wait in the capacity queue (no 409)
    max_wait_s: int | None = None  # how long at most (default IAAS_QUEUE_MAX_WAIT)
    reservation: str | None = None  # run on the GPUs this reservation of the project claims
    networks: tuple[str, ...] | list[str] = ()  # one NIC each, in order; none: its host's
    security_groups: tuple[str, ...] | list[str] = ("default",)  # the project's, by name
    preemptible: bool = False  # a reservation may stop it (its GPUs may be booked under it)
    max_runtime_s: int | None = None  # each run's limit: then stopped, its GPUs given back


@dataclass(frozen=True)
class QueueRules:
    """How creates meet the capacity queue (IAAS_QUEUE_BACKFILL_LIMIT, IAAS_QUEUE_MAX_WAIT)."""

    backfill_limit_s: float = 600.0
    max_wait_s: int = 86400


@dataclass(frozen=True)
class _Build:
    """What a create decided before it claims room: what to build, and where it may go."""

    image: image_dao.ImageRow
    base_path: Path
    cloud_init: CloudInit
    options: BuildOptions
    wanted: list[attachments.Wanted]
    pinned: str | None
    hosts: list[Host]
    capacities: dict[str, HostCapacity]
    reservation: reservation_dao.ReservationRow | None = None
    lacking: frozenset[str] = frozenset()  # hosts without every network asked for
    nics: tuple[Nic, ...] = ()  # the NICs asked for (none: one on its host's network)


def _disks(planned: tuple[attachments.Planned, ...]) -> tuple[VolumeDisk, ...]:
    return tuple(VolumeDisk(disk.volume_id, disk.device, disk.read_only, disk.shareable)
                 for disk in planned)


def _args(args: dict[str, Any]) -> str:
    """A task's payload: what its work needs, as JSON any worker process can read."""
    return json.dumps({"args": args})


class ComputeService:
    def __init__(self, db: Database, hosts: HostRegistry, images: ImageService,
                 executor: Executor, capacity: Capacity, queue: QueueRules = QueueRules(),
                 on_queued: Callable[[], object] = lambda: None) -> None:
        """on_queued: the queue changed (a VM joined or left it): place and rank it now."""
        self._queue = queue
        self._on_queued = on_queued
        self._db = db
        self._capacity = capacity
        self._hosts = hosts
        self._images = images
        self._executor = executor

    def create(self, request: CreateRequest, caller: Principal,
               request_id: str | None = None) -> VmView:
        """Claim capacity (GPUs included), record the VM as building and queue its build.

        With wait_for_capacity, a VM that fits nowhere now is accepted anyway: it is queued,
        holds nothing, and is placed in fair order when capacity frees (src/services/queue).

        Raises: ValidationFailed (ssh_keys, user_data), KeypairNotFoundInRequest,
        ImageNotFoundInRequest, ImageNotActive, ImageFileMissing, ImageInvalid, DiskTooSmall, NameConflict (the name is taken in the
        caller's own project), FlavorNotFoundInRequest,
        SecurityGroupNotFoundInRequest, InsufficientCapacity, QuotaExceeded, Forbidden and HostNotFoundInRequest (host),
        HypervisorUnavailable (no enabled host answers); for volumes VolumeNotFoundInRequest,
        BadRequest, MultiattachRequiresReadOnly, VolumesOnSeveralHosts, VolumeOnOtherHost,
        VolumeNotAvailable, VolumeInUse; for reservation ReservationNotFoundInRequest,
        ReservationFlavorMismatch, ReservationNotActive, ReservationFull.
        """
        if request.host is not None:
            access.require_admin(caller)  # only admins choose the host
        ssh_keys = (seeds.checked_ssh_keys(request.ssh_keys)
                    + keys_of(self._db, request.key_names, caller.project))
        seeds.check_user_data(request.user_data)
        demand, disk_request, flavor = self._demand(request)
        booked = self._reservation(request, flavor, caller)
        image = self._image(request.image_name, caller)
        image, base_path, virtual_size = self._images.verify(image)
        disk_gb = self._disk_gb(virtual_size, disk_request)
        demand = replace(demand, disk_gb=disk_gb)
        wanted, volume_host = attachments.find_wanted(self._db, list(request.volumes), caller)
        if volume_host is not None and request.host not in (None, volume_host):
            raise errors.VolumeOnOtherHost(volume=wanted[0].named, volume_host=volume_host,
                                           vm_host=request.host)
        pinned = volume_host or request.host  # a VM goes where its volumes are
        hosts, capacities = self._candidates(pinned)
        lacking = nics.lacking(hosts, capacities, request.networks, pinned)
        now = utc_now()
        vm_id = str(uuid.uuid4())
        # The domain is named by the id, not the VM's name: names are only unique per project,
        # and a name must not tell anyone what another project has (the name is its title).
        row = vm_dao.VmRow(id=vm_id, name=request.name, domain_name=domain_name(vm_id),
                           cpu=demand.cpu, ram=demand.ram, disk_gb=disk_gb, image_id=image.id,
                           image_name=image.name, status="building", vnc_port=None,
                           error_code=None, error_message=None, created_at=now, updated_at=now,
                           mac=nics.new_mac(), flavor_name=flavor.name if flavor else None,
                           project=caller.project)
        task = replace(new_task_row(row.id, "create", request_id, row.project),
                       executor=self._executor.name)
        build = _Build(image, base_path, CloudInit(ssh_keys, request.user_data),
                       BuildOptions(hugepages=bool(flavor and flavor.hugepages)), wanted,
                       pinned, hosts, capacities, booked, lacking,
                       nics.nics_of(request.networks, row.mac or ""))
        try:
            with self._db.write() as conn:
                if booked is not None and (reservation_dao.get(conn, booked.id) is None or
                                           terms_dao.count_bound(conn, booked.id) >= booked.count):
                    raise errors.ReservationFull(reservation=booked.id, count=booked.count)
                quotas.enforce(conn, row.project, {
                    "instances": 1, "vcpus": demand.cpu, "ram": demand.ram,
                    # A reservation's GPUs count against the quota already, for its window.
                    # A GPU partition (an mdev, a VF) counts as one GPU.
                    "gpus": 0 if booked else demand.gpu_count + bool(demand.gpu_profile),
                    "disk_gb": disk_gb})
                try:
                    row, task = self._place(conn, row, task, demand, build)
                except errors.InsufficientCapacity as short:
                    if not request.wait_for_capacity or booked is not None:
                        raise
                    row, task = self._wait(conn, row, task, demand, short, build,
                                           request.max_wait_s or self._queue.max_wait_s)
                security_groups.attach_at_create(conn, row.id, row.project,
                                                 request.security_groups)
                if request.preemptible or request.max_runtime_s:
                    terms_dao.put(conn, replace(terms_dao.get(conn, row.id),
                                                preemptible=request.preemptible,
                                                max_runtime_s=request.max_runtime_s))
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="VM", name=request.name) from None
        if row.status == "queued":
            self._on_queued()  # ranks it, or places it if capacity freed meanwhile
            return self._as_now(row.id)
        self._executor.submit(task)
        with self._db.read() as conn:
            return view(row, MISSING, task, nics=nic_dao.for_vms(conn, [row.id]).get(row.id),
                        terms=Terms(security_groups=tuple(sorted(request.security_groups)),
                                    preemptible=request.preemptible,
                                    max_runtime_s=request.max_runtime_s))

    def _place(self, conn: sqlite3.Connection, row: vm_dao.VmRow, task: task_dao.TaskRow,
               demand: Demand, build: _Build) -> tuple[vm_dao.VmRow, task_dao.TaskRow]:
        """Claim room for the VM now and record it building (in the create's transaction).
        Hosts kept for a VM waiting past the backfill limit are not considered.

        Raises: InsufficientCapacity, VolumeNotFoundInRequest, VolumeNotAvailable, VolumeInUse.
        """
        booked = build.reservation
        kept = frozenset() if booked else backfill.kept_now(  # a reservation's GPUs are its own
            conn, self._capacity, build.hosts, build.capacities, self._queue.backfill_limit_s)
        kept |= build.lacking  # hosts without its networks
        chosen, claim = self._capacity.claim(conn, demand, build.hosts, build.capacities,
                                             build.pinned, kept, booked.id if booked else None)
        row = replace(row, numa_node=claim.numa_node, pinned_cpus=claim.pinned_cpus,
                      gpus=[gpu.id for gpu in claim.gpus], host=chosen)
        vm_dao.insert(conn, row)
        planned = attachments.attach_at_create(conn, row.id, build.wanted, row.created_at)
        network = next(host.row.network for host in build.hosts if host.name == chosen)
        record = record_for(row, build.image, build.base_path, claim, network,
                            build.cloud_init, build.options, _disks(planned), build.nics)
        nics.put(conn, record)
        task = replace(task, host=chosen, payload=json.dumps(record.to_payload()))
        gpu_dao.allocate(conn, chosen, row.gpus, row.id, row.created_at)
        preemption.notify_landing(conn, row.id, chosen, row.gpus, booked.id if booked else None,
                                  row.created_at)
        hold_partitions(conn, record, row.created_at)
        if booked is not None:
            terms_dao.put(conn, terms_dao.Terms(row.id, reservation_id=booked.id))
        task_dao.insert(conn, task)
        return row, task

    def _reservation(self, request: CreateRequest, flavor: flavor_dao.FlavorRow | None,
                     caller: Principal) -> reservation_dao.ReservationRow | None:
        """The reservation of the caller's project the VM runs in, now in its window.

        Raises: ReservationNotFoundInRequest, ReservationFlavorMismatch, ReservationNotActive.
        """
        if request.reservation is None:
            return None
        with self._db.read() as conn:
            booked = reservation_dao.get(conn, request.reservation, caller.project)
        if booked is None:
            raise errors.ReservationNotFoundInRequest(reservation=request.reservation)
        if flavor is None or flavor.id != booked.flavor_id:
            raise errors.ReservationFlavorMismatch(
                reservation=booked.id, expected=booked.flavor_name,
                flavor=flavor.name if flavor else f"cpu={request.cpu}, ram={request.ram}")
        now = utc_now()
        if booked.status not in OPEN_RESERVATION or not booked.start_at <= now < booked.end_at:
            status = booked.status if booked.status not in OPEN_RESERVATION else (
                "not started" if now < booked.start_at else "over")
            raise errors.ReservationNotActive(reservation=booked.id, status=status,
                                              start=booked.start_at, end=booked.end_at)
        return booked

    def _wait(self, conn: sqlite3.Connection, row: vm_dao.VmRow, task: task_dao.TaskRow,
              demand: Demand, short: errors.ApiError, build: _Build, max_wait_s: int
              ) -> tuple[vm_dao.VmRow, task_dao.TaskRow]:
        """Queue the VM that fits nowhere now (in the create's transaction).

        Raises: InsufficientCapacity again when no host could ever hold it, even empty;
        VolumeNotAvailable, VolumeInUse (its volumes are taken for it now).
        """
        whole = self._capacity.whole_rooms(conn, build.hosts, build.capacities)
        if len(whole) == len(build.hosts) and not could_hold(demand, {
                name: room for name, room in whole.items()
                if build.pinned in (None, name) and name not in build.lacking}):
            raise errors.InsufficientCapacity(
                f"{short.message} No host could hold it even empty, so it cannot wait.",
                **short.details, waitable=False)
        record = record_for(replace(row, host=UNPLACED), build.image, build.base_path, Claim(),
                            "", build.cloud_init, build.options, nics=build.nics)
        row, task = waiting.enqueue(conn, row, task, demand, record,
                                    str(short.details["resource"]), build.pinned,
                                    utc_after(max_wait_s))
        planned = attachments.attach_at_create(conn, row.id, build.wanted, row.created_at)
        if planned:  # its volumes are taken for it while it waits
            task = replace(task, payload=json.dumps(waiting_payload(
                replace(record, volumes=_disks(planned)))))
            task_dao.set_payload(conn, task.id, task.payload)
        return row, task

    def _as_now(self, vm_id: str) -> VmView:
        """The VM as it is now, with its place in the queue while it waits."""
        row, task = row_and_task(self._db, vm_id)
        with self._db.read() as conn:
            wait = wait_dao.get(conn, vm_id)
            terms = terms_of(conn, [row]).get(vm_id)
        return view(row, MISSING, task, queue=wait, terms=terms)

    def _candidates(self, pinned: str | None) -> tuple[list[Host], dict[str, HostCapacity]]:
        """Every host (or the pinned one) and the capacity of those that answer.

        Raises: HostNotFoundInRequest, HypervisorUnavailable when no enabled host answers.
        """
        hosts = self._hosts.all()
        if pinned is not None and pinned not in {host.name for host in hosts}:
            raise errors.HostNotFoundInRequest(host=pinned)
        capacities = self._capacity.known(hosts)
        if not any(host.row.enabled and host.name in capacities for host in hosts):
            raise errors.HypervisorUnavailable("No enabled host answers right now; retry shortly.")
        return hosts, capacities

    def delete(self, id_or_name: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Queue the VM's removal; a VM never placed (it waits for capacity, or its wait
        expired) goes at once. Raises: VmNotFound, AmbiguousName, VmBusy, InvalidState."""
        scope = access.vm_scope(caller, id_or_name, project)
        row, _ = row_and_task(self._db, id_or_name, scope)
        if row.host == UNPLACED:
            removed = waiting.remove_unplaced(self._db, row, request_id)
            if removed is not None:
                self._on_queued()  # the others move up
                return removed
        task = self._hold(id_or_name, "delete", request_id, scope, {})
        self._executor.submit(task)
        return task

    def act(self, id_or_name: str, action: str, options: PowerOptions, caller: Principal,
            request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue a power action. Raises: VmNotFound, AmbiguousName, VmBusy, InvalidState,
        VolumeBusy (a start while a volume it writes has a task under way)."""
        task = self._hold(id_or_name, action, request_id,
                          access.vm_scope(caller, id_or_name, project), asdict(options))
        self._executor.submit(task)
        return task

    def _hold(self, id_or_name: str, action: str, request_id: str | None,
              scope: str | None, args: dict[str, Any]) -> task_dao.TaskRow:
        """Take the VM's hold for action: its one active task, inserted atomically. scope is
        the project the lookup searches (None: every project).

        Raises: VmNotFound, AmbiguousName, HostUnavailable, VmBusy, InvalidState, VolumeBusy.
        """
        row, _ = row_and_task(self._db, id_or_name, scope)
        if row.host == UNPLACED and action != "delete":  # nothing of it is on any host
            raise errors.InvalidState(action=action, status=row.status, allowed=["delete"])
        host = self._hosts.require_up(row.host)
        # Only an errored VM's allowed list depends on the host (start needs the domain).
        exists = row.status != "error" or host.hypervisor.power_state(row.id) != MISSING
        task = replace(new_task_row(row.id, action, request_id, row.project, host.name),
                       payload=_args(args), executor=self._executor.name)
        with self._db.write() as conn:
            current = vm_dao.get(conn, row.id)
            if current is None:  # deleted since we looked
                raise errors.VmNotFound(vm=id_or_name)
            active = task_dao.active_for_vm(conn, current.id)
            if active is not None:
                raise errors.VmBusy(vm=id_or_name, task_id=active.id, action=active.action)
            allowed = lifecycle.allowed_actions(current.status, busy=False, domain_exists=exists)
            if action not in allowed:
                raise errors.InvalidState(action=action, status=current.status, allowed=allowed)
            if action == "start":
                attachments.refuse_busy_volumes(conn, current.id)
                preemption.retake(conn, current)  # GPUs a reservation's stop gave back
            try:
                task_dao.insert(conn, task)
            except sqlite3.IntegrityError:  # the unique hold index: someone got there first
                raise errors.VmBusy(vm=id_or_name) from None
        return task

    def _demand(self, request: CreateRequest
                ) -> tuple[Demand, int | None, flavor_dao.FlavorRow | None]:
        """(what the VM needs, disk_gb wanted, its flavor). Raises: FlavorNotFoundInRequest."""
        if request.flavor is None:
            assert request.cpu is not None and request.ram is not None
            return Demand(cpu=request.cpu, ram=request.ram), request.disk_gb, None
        with self._db.read() as conn:
            flavor = flavor_dao.get(conn, request.flavor)
        if flavor is None:
            raise errors.FlavorNotFoundInRequest(flavor=request.flavor)
        return demand_of(flavor), request.disk_gb or flavor.disk_gb, flavor

    def _image(self, name: str, caller: Principal) -> image_dao.ImageRow:
        """The image caller means (its project's or a public one). Raises: ImageNotFoundInRequest."""
        try:
            return self._images.get(name, caller)
        except errors.ImageNotFound:
            raise errors.ImageNotFoundInRequest(image=name) from None

    @staticmethod
    def _disk_gb(virtual_size: int, requested: int | None) -> int:
        """Raises: DiskTooSmall."""
        minimum = max(1, math.ceil(virtual_size / GIB))
        if requested is None:
            return minimum
        if requested < minimum:
            raise errors.DiskTooSmall(disk_gb=requested, minimum_gb=minimum)
        return requested
