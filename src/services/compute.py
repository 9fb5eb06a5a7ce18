"""ComputeService: accept VM create/delete requests, run them as tasks, merge DB and live state."""
from __future__ import annotations

import logging
import math
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass, replace

from src import errors
from src.database import flavors as flavor_dao
from src.database import gpus as gpu_dao
from src.database import images as image_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services import lifecycle, quotas
from src.services.addresses import AddressBook
from src.services.images import ImageService
from src.services.placement import Demand, Placement
from src.services.power import PowerControl, PowerOptions
from src.services.provisioning import GIB, BuildPlan, Provisioner
from src.services.stats import summarize
from src.services.tasks import TaskFailed, TaskRunner, new_task_row
from src.utils.clock import utc_now
from src.utils.libvirt_host import MISSING, DomainNotFound, Hypervisor, HypervisorError

log = logging.getLogger(__name__)

STATS_WINDOW_S = 0.5
CLEANUP_FAILED = ("Its domain could not be removed, so it keeps its resources; "
                  "delete the VM to finish the clean-up.")
CONSOLE_READ_LIMIT = 1024 * 1024  # tail reads at most the last MiB of the log


@dataclass(frozen=True)
class VmView:
    """A VM as the API shows it: its row, live power state and unfinished task."""

    row: vm_dao.VmRow
    power_state: str
    task: task_dao.TaskRow | None
    actions: list[str]


def _view(row: vm_dao.VmRow, power_state: str, task: task_dao.TaskRow | None) -> VmView:
    actions = lifecycle.allowed_actions(row.status, busy=task is not None,
                                        domain_exists=power_state != MISSING)
    return VmView(row=row, power_state=power_state, task=task, actions=actions)


@dataclass(frozen=True)
class CreateRequest:
    """Either flavor, or cpu and ram (the handler enforces which)."""

    name: str
    image_name: str
    cpu: int | None = None
    ram: int | None = None
    disk_gb: int | None = None
    flavor: str | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    project: str = "default"


@dataclass(frozen=True)
class Timeouts:
    """How long a task may run before the reconciler fails it with task_timeout."""

    task_s: float = 600.0
    shutdown_margin_s: float = 60.0


def demand_of(flavor: flavor_dao.FlavorRow) -> Demand:
    return Demand(cpu=flavor.cpu, ram=flavor.ram, gpu_count=flavor.gpu_count,
                  gpu_model=flavor.gpu_model, numa_aligned=flavor.numa_aligned,
                  cpu_pinning=flavor.cpu_pinning)


def _new_mac() -> str:
    # 52:54:00 is QEMU's locally administered prefix, as libvirt itself uses.
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))


class ComputeService:
    def __init__(self, db: Database, hypervisor: Hypervisor, images: ImageService,
                 provisioner: Provisioner, runner: TaskRunner, addresses: AddressBook,
                 placement: Placement, timeouts: Timeouts) -> None:
        self._db = db
        self._placement = placement
        self._hypervisor = hypervisor
        self._images = images
        self._provisioner = provisioner
        self._runner = runner
        self._addresses = addresses
        self._timeouts = timeouts
        self._power = PowerControl(hypervisor)

    def create(self, request: CreateRequest, request_id: str | None = None) -> VmView:
        """Claim capacity (GPUs included), record the VM as building and queue its build.

        Raises: ImageNotFoundInRequest, ImageFileMissing, DiskTooSmall, NameConflict,
        FlavorNotFoundInRequest, InsufficientCapacity, QuotaExceeded.
        """
        demand, disk_request, flavor = self._demand(request)
        try:
            image = self._images.get(request.image_name)
        except errors.ImageNotFound:
            raise errors.ImageNotFoundInRequest(image=request.image_name) from None
        base = self._images.path_of(image.file)
        if not base.is_file():
            raise errors.ImageFileMissing(file=image.file, image=image.name)
        disk_gb = self._disk_gb(image, disk_request)
        if self._hypervisor.name_taken(request.name):
            raise errors.NameConflict(kind="domain", name=request.name)
        host = self._placement.host()
        now = utc_now()
        row = vm_dao.VmRow(id=str(uuid.uuid4()), name=request.name, cpu=demand.cpu,
                           ram=demand.ram, disk_gb=disk_gb, image_id=image.id,
                           image_name=image.name, status="building", vnc_port=None,
                           error_code=None, error_message=None, created_at=now, updated_at=now,
                           mac=_new_mac(), flavor_name=flavor.name if flavor else None,
                           project=request.project)
        task = new_task_row(row.id, "create", request_id, request.project)
        try:
            with self._db.write() as conn:
                quotas.enforce(conn, request.project, {
                    "instances": 1, "vcpus": demand.cpu, "ram": demand.ram,
                    "gpus": demand.gpu_count})
                claim = self._placement.claim(conn, demand, host)
                row = replace(row, numa_node=claim.numa_node, pinned_cpus=claim.pinned_cpus,
                              gpus=[gpu.id for gpu in claim.gpus])
                vm_dao.insert(conn, row)
                gpu_dao.allocate(conn, row.gpus, row.id, now)
                task_dao.insert(conn, task)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="VM", name=request.name) from None
        plan = BuildPlan(vm_id=row.id, name=row.name, cpu=row.cpu, ram=row.ram, disk_gb=disk_gb,
                         image_name=image.name, base_path=base, base_format=image.format,
                         mac=row.mac or _new_mac(),
                         gpu_functions=[fn for gpu in claim.gpus for fn in gpu.functions],
                         numa_node=claim.numa_node, node_cpus=claim.node_cpus,
                         pinned_cpus=claim.pinned_cpus,
                         hugepages=bool(flavor and flavor.hugepages),
                         ssh_keys=tuple(request.ssh_keys), user_data=request.user_data)
        self._runner.submit(task, lambda: self._build(plan), self._timeouts.task_s)
        return _view(row, MISSING, task)

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

    def get(self, id_or_name: str, project: str | None = None) -> VmView:
        """The VM with its live power state; learns its addresses if it has none yet.

        Raises: VmNotFound.
        """
        row, task = self._row_and_task(id_or_name, project)
        power_state = self._hypervisor.power_state(row.id)
        if power_state == "running" and not row.ip_addresses and row.mac:
            learned = self._addresses.learn_one(row.id, row.mac)
            if learned:
                row = self._row_and_task(row.id)[0]
        return _view(row, power_state, task)

    def _row_and_task(self, id_or_name: str, project: str | None = None
                      ) -> tuple[vm_dao.VmRow, task_dao.TaskRow | None]:
        """Raises: VmNotFound, also for another project's VM (its existence is not revealed)."""
        with self._db.read() as conn:
            row = vm_dao.get(conn, id_or_name, project)
            task = task_dao.active_for_vm(conn, row.id) if row else None
        if row is None:
            raise errors.VmNotFound(vm=id_or_name)
        return row, task

    def events(self, id_or_name: str, limit: int,
               project: str | None = None) -> list[task_dao.TaskRow]:
        """Every action recorded for the VM, newest first. Raises: VmNotFound."""
        with self._db.read() as conn:
            row = vm_dao.get(conn, id_or_name, project)
            if row is None:
                raise errors.VmNotFound(vm=id_or_name)
            return task_dao.list_for_vm(conn, row.id, limit)

    def stats(self, id_or_name: str, project: str | None = None) -> dict[str, object]:
        """CPU, memory, disk and NIC counters sampled over STATS_WINDOW_S. Raises: VmNotFound,
        VmNotRunning."""
        row, _ = self._row_and_task(id_or_name, project)
        try:
            first = self._hypervisor.stats(row.id)
            started = time.monotonic()
            time.sleep(STATS_WINDOW_S)
            second = self._hypervisor.stats(row.id)
            window = time.monotonic() - started
        except DomainNotFound:
            raise errors.VmNotRunning(vm=id_or_name) from None
        state = second.get("state.state")
        if state not in (1, 2, 3):  # running, blocked, paused
            raise errors.VmNotRunning(vm=id_or_name)
        return {"vm_id": row.id, **summarize(first, second, window, row.cpu)}

    def console(self, id_or_name: str, lines: int, project: str | None = None) -> str:
        """The last lines of the VM's serial console log ('' before the guest wrote any).

        Raises: VmNotFound.
        """
        row, _ = self._row_and_task(id_or_name, project)
        path = self._provisioner.console_log(row.id)
        try:
            with path.open("rb") as log_file:
                size = log_file.seek(0, 2)
                log_file.seek(max(0, size - CONSOLE_READ_LIMIT))
                data = log_file.read()
        except FileNotFoundError:
            return ""
        text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return "".join(text.splitlines(keepends=True)[-lines:])

    def act(self, id_or_name: str, action: str, options: PowerOptions,
            request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue a power action. Raises: VmNotFound, VmBusy, InvalidState."""
        task, vm_id = self._hold(id_or_name, action, request_id, project)
        timeout = self._timeouts.task_s
        if action == "shutdown":
            timeout = max(timeout, options.timeout_s + self._timeouts.shutdown_margin_s)
        self._runner.submit(task, lambda: self._power_action(vm_id, action, options), timeout)
        return task

    def _hold(self, id_or_name: str, action: str, request_id: str | None,
              project: str | None) -> tuple[task_dao.TaskRow, str]:
        """Take the VM's hold for action: its one active task, inserted atomically.

        Raises: VmNotFound, VmBusy, InvalidState.
        """
        row, _ = self._row_and_task(id_or_name, project)
        # Only an errored VM's allowed list depends on the host (start needs the domain).
        exists = row.status != "error" or self._hypervisor.power_state(row.id) != MISSING
        task = new_task_row(row.id, action, request_id, row.project)
        with self._db.write() as conn:
            current = vm_dao.get(conn, row.id)
            if current is None:  # deleted since we looked
                raise errors.VmNotFound(vm=id_or_name)
            row = current
            active = task_dao.active_for_vm(conn, row.id)
            if active is not None:
                raise errors.VmBusy(vm=id_or_name, task_id=active.id, action=active.action)
            allowed = lifecycle.allowed_actions(row.status, busy=False, domain_exists=exists)
            if action not in allowed:
                raise errors.InvalidState(action=action, status=row.status, allowed=allowed)
            try:
                task_dao.insert(conn, task)
            except sqlite3.IntegrityError:  # the unique hold index: someone got there first
                raise errors.VmBusy(vm=id_or_name) from None
            if action == "delete":
                vm_dao.set_status(conn, row.id, "deleting", utc_now())
        return task, row.id

    def list(self, *, status: str | None = None, name: str | None = None, limit: int = 1000,
             marker: str | None = None, project: str | None = None) -> list[VmView]:
        """A page of VMs with live state from one bulk libvirt call. Raises: MarkerNotFound."""
        with self._db.read() as conn:
            after = vm_dao.get(conn, marker, project) if marker is not None else None
            if marker is not None and (after is None or after.id != marker):
                raise errors.MarkerNotFound(marker=marker)
            rows = vm_dao.list_page(conn, status=status, name=name, after=after, limit=limit,
                                    project=project)
            active = task_dao.active_by_vm(conn) if rows else {}
        states = self._hypervisor.power_states() if rows else {}
        return [_view(row, states.get(row.id, MISSING), active.get(row.id)) for row in rows]

    def delete(self, id_or_name: str, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Queue the VM's removal. Raises: VmNotFound, VmBusy, InvalidState."""
        task, vm_id = self._hold(id_or_name, "delete", request_id, project)
        self._runner.submit(task, lambda: self._delete(vm_id), self._timeouts.task_s)
        return task

    def recover_interrupted(self) -> int:
        """End the tasks a restart cut short; return how many.

        A half-made VM is torn down and kept in error (interrupted) for the user to see; a
        half-done delete is finished; a power action just fails, and the reconciler's first
        sweep sets the status from the host.
        """
        with self._db.read() as conn:
            interrupted = task_dao.list_active(conn)
        message = "The server stopped before this task finished."
        for task in interrupted:
            error: tuple[str, str] | None = ("interrupted", message)
            if task.action == "create":
                cleaned = self._tear_down_quietly(task.vm_id)
                with self._db.write() as conn:
                    vm_dao.set_status(conn, task.vm_id, "error", utc_now(), error if cleaned
                                      else ("cleanup_failed", CLEANUP_FAILED))
                    if cleaned:  # a domain that may still run keeps its GPUs and CPUs
                        vm_dao.release_resources(conn, task.vm_id)
            elif task.action == "delete":
                try:
                    self._delete(task.vm_id)
                    error = None
                except TaskFailed as exc:
                    error = (exc.code, exc.message)
            with self._db.write() as conn:
                task_dao.finish(conn, task.id, utc_now(), error)
        return len(interrupted)

    def _tear_down_quietly(self, vm_id: str) -> bool:
        """Whether nothing of the VM is left on the host."""
        try:
            self._provisioner.tear_down(vm_id)
        except TaskFailed as exc:
            log.error("cleanup of interrupted build %s failed: %s", vm_id, exc)
            return False
        return True

    def _gone_from_host(self, vm_id: str) -> bool:
        """Whether the VM has no domain; an unreachable host counts as 'maybe still there'."""
        try:
            return self._hypervisor.power_state(vm_id) == MISSING
        except HypervisorError:
            return False

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
                if not vm_dao.set_status(conn, plan.vm_id, "running", now, only_from="building"):
                    # The reconciler failed this build (task_timeout) meanwhile: undo it all.
                    raise TaskFailed("task_timeout", "The build outlived its deadline.")

        try:
            self._provisioner.build(plan, mark_running)
        except Exception as exc:
            failure = exc if isinstance(exc, TaskFailed) else TaskFailed(
                "build_failed", f"The build failed unexpectedly: {exc}")
            gone = self._gone_from_host(plan.vm_id)  # the undo steps are best-effort
            with self._db.write() as conn:
                vm_dao.set_status(conn, plan.vm_id, "error", utc_now(), (
                    failure.code, failure.message if gone else
                    f"{failure.message} {CLEANUP_FAILED}"), only_from="building")
                if gone:  # only what is off the host may go to the next VM
                    vm_dao.release_resources(conn, plan.vm_id)
            if isinstance(exc, TaskFailed):
                raise
            log.exception("build of %s crashed", plan.vm_id)
            raise failure from exc

    def _power_action(self, vm_id: str, action: str, options: PowerOptions) -> None:
        self._power.run(vm_id, action, options)
        status = lifecycle.RESULT[action]
        running = status != "stopped"
        vnc_port = self._provisioner.vnc_port(vm_id) if running else None
        with self._db.write() as conn:
            now = utc_now()
            vm_dao.set_status(conn, vm_id, status, now)
            vm_dao.set_vnc_port(conn, vm_id, vnc_port, now)
            if not running:
                vm_dao.set_addresses(conn, vm_id, [], now)

    def _delete(self, vm_id: str) -> None:
        try:
            self._provisioner.tear_down(vm_id)
        except TaskFailed as exc:
            with self._db.write() as conn:
                vm_dao.set_status(conn, vm_id, "error", utc_now(), (exc.code, exc.message))
            raise
        with self._db.write() as conn:
            vm_dao.delete(conn, vm_id)
