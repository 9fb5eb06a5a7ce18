"""Keep the DB true to the host: libvirt lifecycle events, a periodic sweep, and task deadlines.

Rules (the hypervisor is the truth for power state; see lifecycle.reconciled):
- an idle VM takes the status its domain's power state implies; a vanished domain is
  error/domain_missing, a crashed guest error/guest_crashed;
- a VM held by a task is left to the task, and re-checked when the task ends;
- a task running past its deadline fails with task_timeout and puts its VM in error.

A sweep's libvirt calls do not grow with the number of VMs: one bulk power-state call, then
what AddressBook.learn costs (at most LEARN_CALLS_BOUND), then the host's size (its capacity,
read here rather than by the next create) and one listing of its PCI devices (its GPUs), so at
most SWEEP_CALLS_BOUND; a VM whose status changed adds the few calls that follow the change
(autostart, VNC port).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from src.database import images as image_dao
from src.database import leases as lease_dao
from src.database import tasks as task_dao
from src.database import vm_nics as nic_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.domains import HALTED, MISSING
from src.hypervisor.errors import HypervisorError
from src.services.hosts.capacity import CAPACITY_CALLS
from src.services.hosts.registry import Host, HostRegistry
from src.services.rules import lifecycle
from src.services.tasks.runner import TaskRunner
from src.services.tasks.step_leases import this_process
from src.services.vms.addresses import LEARN_CALLS_BOUND, AddressBook
from src.utils.clock import utc_after, utc_now

log = logging.getLogger(__name__)

_SWEEP = "<sweep>"
_STOP = "<stop>"
UP_STATUSES = ("running", "paused")
GPU_CALLS = 1  # the host's PCI devices, read once per sweep
SWEEP_CALLS_BOUND = 1 + LEARN_CALLS_BOUND + CAPACITY_CALLS + GPU_CALLS


@dataclass(frozen=True)
class SweepResult:
    changed: int
    timed_out: int
    addresses_learned: int


HOLDER = this_process()  # who holds a sweep's lease: this process, named as for step leases


def lead(db: Database, job: str, interval_s: float) -> bool:
    """Whether this process does job now: one sweep of a host (or one housekeeping pass) at a
    time, whatever the number of API and worker processes. The lease outlives two intervals,
    so a process that died frees it soon."""
    with db.write() as conn:
        return lease_dao.take(conn, job, HOLDER, utc_now(), utc_after(2 * interval_s))


class HostReconciler:
    """One host's events and sweeps, on a thread of its own: a slow or dead host delays no
    other host's reconciliation."""

    def __init__(self, db: Database, host: Host, addresses: AddressBook, runner: TaskRunner,
                 interval_s: float, use_events: bool,
                 after_sweep: Callable[[Host], object] = lambda _host: None) -> None:
        self._db = db
        self._after_sweep = after_sweep  # e.g. re-read the host's GPUs
        self._host = host
        self._hypervisor = host.hypervisor
        self._addresses = addresses
        self._runner = runner
        self._interval_s = interval_s
        self._use_events = use_events
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.sweeps = 0  # sweeps done and the libvirt calls they made, read by benchmarks
        self.sweep_calls = 0

    def start(self) -> None:
        """Listen to libvirt (if enabled) and sweep every interval on a background thread."""
        if self._use_events:
            self._hypervisor.watch(self._on_event, self.request_sweep)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"reconcile-{self._host.name}")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)

    @property
    def host_name(self) -> str:
        return self._host.name

    def _on_event(self, vm_id: str, _event: str) -> None:
        """A lifecycle event: a task waiting on this VM looks now, and the VM is re-read."""
        self._runner.poke(vm_id)
        self.check(vm_id)

    def check(self, vm_id: str) -> None:
        """Re-read one VM's domain soon (an event arrived, or its task ended)."""
        self._queue.put(vm_id)

    def request_sweep(self) -> None:
        self._queue.put(_SWEEP)

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self._interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                item = _SWEEP
            if item == _STOP:
                return
            try:
                if item == _SWEEP:
                    if lead(self._db, f"sweep:{self._host.name}", self._interval_s):
                        self.sweep()
                else:
                    self.check_now(item)
            except HypervisorError as exc:
                log.warning("reconcile skipped, libvirt unavailable: %s", exc)
            except Exception:  # the loop must outlive any single bad pass
                log.exception("reconcile pass failed")
            if item == _SWEEP or time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self._interval_s

    def sweep(self) -> SweepResult:
        """One full pass with bulk calls: deadlines, power states, addresses; at most
        SWEEP_CALLS_BOUND libvirt calls when no VM changed status."""
        calls_before = self._hypervisor.thread_calls
        with self._db.read() as conn:
            rows = vm_dao.list_on(conn, self._host.name)
            active = task_dao.active_by_vm(conn)
        states = self._hypervisor.power_states() if rows else {}
        changed = sum(self._apply(row, states.get(row.id, MISSING))
                      for row in rows if row.id not in active)
        running = [row for row in rows
                   if row.mac and row.id not in active and states.get(row.id) == "running"]
        learned = self._addresses.learn(running, self._host)
        self.sweeps += 1
        self.sweep_calls += self._hypervisor.thread_calls - calls_before
        self._after_sweep(self._host)
        return SweepResult(changed=changed, timed_out=0, addresses_learned=learned)

    def check_now(self, vm_id: str) -> bool:
        """Reconcile one VM against its domain; True if its status changed."""
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
            busy = row is not None and task_dao.active_for_vm(conn, vm_id) is not None
        if row is None or busy or row.host != self._host.name:
            return False  # (another host's: an event of a migration's other end)
        return self._apply(row, self._hypervisor.power_state(vm_id))

    def _apply(self, row: vm_dao.VmRow, power_state: str) -> bool:
        target = lifecycle.reconciled(row.status, row.error_code, power_state)
        if target is None:
            return False
        status, error = target
        if error is not None and power_state == HALTED:
            error = (error[0], f"{error[1]} libvirt's reason: {self._pause_reason(row.id)}.")
        with self._db.write() as conn:
            now = utc_now()
            if not vm_dao.set_status_if_idle(conn, row, status, now, error):
                return False  # a task took the VM, or it changed, since we looked
            if status not in UP_STATUSES:
                vm_dao.set_addresses(conn, row.id, [], now)
                nic_dao.clear_addresses(conn, row.id)
                vm_dao.set_vnc_port(conn, row.id, None, now)
        log.warning("vm %s (%s): %s -> %s, libvirt reports %s", row.id, row.name, row.status,
                    status, power_state)
        self._follow_host(row.id, status)
        return True

    def _pause_reason(self, vm_id: str) -> str:
        try:
            return self._hypervisor.pause_reason(vm_id)
        except HypervisorError:
            return "unknown"

    def _follow_host(self, vm_id: str, status: str) -> None:
        """Autostart and the VNC port follow a change made outside the API."""
        if status not in ("running", "stopped"):
            return
        try:
            self._hypervisor.set_autostart(vm_id, status == "running")
            if status == "running":
                port = self._hypervisor.vnc_port(vm_id)
                with self._db.write() as conn:
                    vm_dao.set_vnc_port(conn, vm_id, port, utc_now())
        except HypervisorError as exc:
            log.warning("could not follow host change of %s: %s", vm_id, exc)


class Reconciler:
    """Every host's reconciler, and the work that belongs to no host: overdue tasks and
    housekeeping (retention, queue expiry), every interval on a thread of its own."""

    def __init__(self, db: Database, hosts: HostRegistry, addresses: AddressBook,
                 runner: TaskRunner, interval_s: float, use_events: bool,
                 housekeeping: Callable[[], object] = lambda: None,
                 after_host_sweep: Callable[[Host], object] = lambda _host: None,
                 on_stop: Callable[[], object] = lambda: None) -> None:
        """after_host_sweep(host) runs after each sweep of a host (e.g. re-read its GPUs);
        on_stop() as stop begins (ends a housekeeping pass under way)."""
        self._db = db
        self._on_stop = on_stop
        self._after_host_sweep = after_host_sweep
        self._hosts = hosts
        self._addresses = addresses
        self._runner = runner
        self._interval_s = interval_s
        self._use_events = use_events
        self._housekeeping = housekeeping
        self._per_host: dict[str, HostReconciler] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        hosts.on_open(self._add)

    @property
    def sweeps(self) -> int:
        return sum(reconciler.sweeps for reconciler in self._all())

    @property
    def sweep_calls(self) -> int:
        return sum(reconciler.sweep_calls for reconciler in self._all())

    def start(self) -> None:
        with self._lock:
            self._started = True
            waiting = list(self._per_host.values())
        for reconciler in waiting:
            reconciler.start()
        self._thread = threading.Thread(target=self._keep_house, name="housekeeping",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._on_stop()
        for reconciler in self._all():
            reconciler.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check(self, vm_id: str) -> None:
        """Re-read one VM's domain soon, on its host."""
        reconciler = self._of_vm(vm_id)
        if reconciler is not None:
            reconciler.check(vm_id)

    def check_now(self, vm_id: str) -> bool:
        reconciler = self._of_vm(vm_id)
        return reconciler is not None and reconciler.check_now(vm_id)

    def after_task(self, vm_id: str) -> None:
        """Re-read the VM's domain now that its task ended, before its waiters wake (see
        TaskRunner._ended): a check queued for later could land after the caller's next step
        and undo what it saw. A host that does not answer leaves it to the sweep thread."""
        if not vm_id:
            return
        try:
            self.check_now(vm_id)
        except HypervisorError:
            self.check(vm_id)

    def request_sweep(self) -> None:
        for reconciler in self._all():
            reconciler.request_sweep()

    def sweep(self) -> SweepResult:
        """Sweep every host that answers now, then fail overdue tasks and keep house."""
        timed_out = self.fail_overdue_tasks()
        changed = learned = 0
        for reconciler in self._all():
            if not self._hosts.is_up(reconciler.host_name):
                continue
            result = reconciler.sweep()
            changed, learned = changed + result.changed, learned + result.addresses_learned
        self._housekeeping()
        return SweepResult(changed=changed, timed_out=timed_out, addresses_learned=learned)

    def fail_overdue_tasks(self) -> int:
        """Fail running tasks past their deadline (task_timeout); how many."""
        message = "The task ran past its deadline and was abandoned."
        with self._db.write() as conn:
            now = utc_now()
            overdue = task_dao.overdue(conn, now)
            for task in overdue:
                task_dao.finish(conn, task.id, now, ("task_timeout", message))
                if task.vm_id is not None:
                    vm_dao.set_status(conn, task.vm_id, "error", now, ("task_timeout", message))
                elif task.image_id is not None:  # an import: its download's watch, in
                    # whichever process, sees this within a second and closes its connection
                    image_dao.set_status(conn, task.image_id, "error", ("importing",),
                                         ("task_timeout", message))
        for task in overdue:
            log.error("task %s (%s) of vm %s timed out", task.id, task.action, task.vm_id)
        if overdue:
            self._runner.notify()
        return len(overdue)


    def _add(self, host: Host) -> None:
        reconciler = HostReconciler(self._db, host, self._addresses, self._runner,
                                    self._interval_s, self._use_events,
                                    self._after_host_sweep)
        with self._lock:
            if host.name in self._per_host:
                return
            self._per_host[host.name] = reconciler
            started = self._started
        if started:
            reconciler.start()

    def _all(self) -> list[HostReconciler]:
        with self._lock:
            return list(self._per_host.values())

    def _of_vm(self, vm_id: str) -> HostReconciler | None:
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
        if row is None:
            return None
        self._hosts.get(row.host)  # opens its connection (and reconciler) if not yet
        with self._lock:
            return self._per_host.get(row.host)

    def _keep_house(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not lead(self._db, "housekeeping", self._interval_s):
                    continue  # another process (an API or a worker) keeps house now
                self.fail_overdue_tasks()
                self._housekeeping()
            except Exception:  # the loop must outlive any single bad pass
                log.exception("housekeeping pass failed")
