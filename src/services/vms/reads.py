"""Reading VMs: show, list, events, console, stats and their tasks, merged with live host state."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from src import errors
from src.database import capacity_waits as wait_dao
from src.database import security_groups as group_dao
from src.database import tasks as task_dao
from src.database import vm_nics as nic_dao
from src.database import vm_terms as terms_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.domains import MISSING
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import DomainNotFound, HypervisorError, HypervisorUnavailable
from src.services.hosts.registry import Host, HostRegistry
from src.services.rules import access, lifecycle
from src.services.rules.access import Principal
from src.services.tasks.runner import TaskRunner
from src.services.tasks.waits import WaitLimiter
from src.services.vms import preemption
from src.services.vms.addresses import AddressBook
from src.services.vms.stats import summarize
from src.vocabulary import ACTIVE_TASK_STATUSES

STATS_WINDOW_S = 0.5
PARALLEL_HOSTS = 16  # hosts asked at once for a list
UNKNOWN = "unknown"  # the power state of a VM whose host does not answer
MAX_WAIT_S = 60
POLL_AGAIN_S = 1  # a declined long-poll: when to ask again
ConsoleTail = Callable[[str, Host], bytes]  # the end of a VM's serial console log


class PowerStates(dict[str, str]):
    """Power states by VM id, and which hosts answered."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: set[str] = set()


def _states_of(hypervisor: Hypervisor) -> dict[str, str] | None:
    try:
        return hypervisor.power_states()
    except HypervisorError:
        return None


class VmView(NamedTuple):
    """A VM as the API shows it: its row, live power state and unfinished task (a NamedTuple:
    immutable, and built in a quarter of a frozen dataclass's time, once per VM listed)."""

    row: vm_dao.VmRow
    power_state: str
    task: task_dao.TaskRow | None
    actions: list[str]
    volumes: list[volume_dao.AttachmentRow] = []  # noqa: RUF012 - never mutated
    queue: wait_dao.WaitRow | None = None  # its place in the capacity queue, while it waits
    preempt_at: str | None = None  # when a reservation claims its GPUs: it is stopped then
    reservation: str | None = None  # the reservation it runs in
    nics: list[nic_dao.NicRow] = []  # noqa: RUF012 - never mutated
    security_groups: tuple[str, ...] = ()  # the names of its groups
    preemptible: bool = False  # it said so at create: a reservation may stop it
    max_runtime_s: int | None = None  # each run's limit
    stop_at: str | None = None  # when this run reaches it


@dataclass(frozen=True)
class TaskAnswer:
    """A task as it is now; retry_after_s is set when its long-poll was declined."""

    row: task_dao.TaskRow
    retry_after_s: int | None = None


def view(row: vm_dao.VmRow, power_state: str, task: task_dao.TaskRow | None,
         volumes: list[volume_dao.AttachmentRow] | None = None,
         queue: wait_dao.WaitRow | None = None, terms: Terms | None = None,
         nics: list[nic_dao.NicRow] | None = None) -> VmView:
    actions = lifecycle.allowed_actions(row.status, busy=task is not None,
                                        domain_exists=power_state != MISSING)
    if terms is None:
        return VmView(row, power_state, task, actions, volumes or [], queue, nics=nics or [])
    return VmView(row, power_state, task, actions, volumes or [], queue, terms.preempt_at,
                  terms.reservation, nics or [], terms.security_groups, terms.preemptible,
                  terms.max_runtime_s, terms.runs_until)


class Terms(NamedTuple):
    """What a VM's view says beyond its row: its reservation, and when it is preempted (a
    NamedTuple: one is built per VM listed that is in a security group, which is every VM)."""

    reservation: str | None = None
    preempt_at: str | None = None
    security_groups: tuple[str, ...] = ()
    preemptible: bool = False
    max_runtime_s: int | None = None
    runs_until: str | None = None


def terms_of(conn: sqlite3.Connection, rows: list[vm_dao.VmRow]) -> dict[str, Terms]:
    if not rows:
        return {}
    ids = [row.id for row in rows]
    preempts = preemption.preempt_at(conn, rows)
    bound = terms_dao.of_vms(conn, ids)
    groups = group_dao.names_by_vm(conn, ids)
    found: dict[str, Terms] = {}
    for vm_id in ids:
        agreed = bound.get(vm_id)
        names = groups.get(vm_id)
        if agreed is None and not names and vm_id not in preempts:
            continue
        found[vm_id] = Terms(agreed.reservation_id if agreed else None, preempts.get(vm_id),
                             tuple(names) if names else (), bool(agreed and agreed.preemptible),
                             agreed.max_runtime_s if agreed else None,
                             agreed.runs_until if agreed else None)
    return found


# What a page shows beside its rows, by VM id: unfinished tasks, volumes, queue places, terms, NICs
_Beside = tuple[dict[str, task_dao.TaskRow], dict[str, list[volume_dao.AttachmentRow]],
                dict[str, wait_dao.WaitRow], dict[str, Terms], dict[str, list[nic_dao.NicRow]]]


def lookup(conn: sqlite3.Connection, id_or_name: str, project: str | None) -> vm_dao.VmRow:
    """The one VM with this id, or with this name in project (None: in any project).

    Raises: VmNotFound, also for another project's VM (its existence is not revealed);
    AmbiguousName when projects share the name and project does not say which.
    """
    found = vm_dao.find(conn, id_or_name, project)
    if not found:
        raise errors.VmNotFound(vm=id_or_name)
    if len(found) > 1:  # only an admin's unnarrowed lookup sees more than one project
        raise errors.AmbiguousName(name=id_or_name, count=len(found),
                                   ids=[row.id for row in found])
    return found[0]


def row_and_task(db: Database, id_or_name: str, project: str | None = None
                 ) -> tuple[vm_dao.VmRow, task_dao.TaskRow | None]:
    """Raises: VmNotFound, AmbiguousName (see lookup)."""
    with db.read() as conn:
        row = lookup(conn, id_or_name, project)
        task = task_dao.active_for_vm(conn, row.id)
    return row, task


class VmReader:
    def __init__(self, db: Database, hosts: HostRegistry, addresses: AddressBook,
                 runner: TaskRunner, console_tail: ConsoleTail, waits: WaitLimiter) -> None:
        self._db = db
        self._waits = waits
        self._hosts = hosts
        self._addresses = addresses
        self._runner = runner
        self._console_tail = console_tail
        self._pool = ThreadPoolExecutor(PARALLEL_HOSTS, thread_name_prefix="list")

    def get(self, id_or_name: str, caller: Principal, project: str | None = None) -> VmView:
        """The VM with its live power state; learns its addresses if it has none yet.

        Raises: VmNotFound, AmbiguousName.
        """
        row, task = row_and_task(self._db, id_or_name,
                                 access.vm_scope(caller, id_or_name, project))
        with self._db.read() as conn:
            volumes = volume_dao.attachments_for_vms(conn, [row.id]).get(row.id, [])
            wait = wait_dao.get(conn, row.id) if row.status == "queued" else None
            terms = terms_of(conn, [row]).get(row.id)
            nics = nic_dao.for_vms(conn, [row.id]).get(row.id, [])
        if not row.host:  # never placed: it waits for capacity (or its wait expired)
            return view(row, MISSING, task, volumes, wait, terms, nics)
        if not self._hosts.is_up(row.host):
            return view(row, UNKNOWN, task, volumes, terms=terms, nics=nics)  # what we know
        host = self._hosts.get(row.host)
        try:
            power_state = host.hypervisor.power_state(row.id)
        except HypervisorUnavailable:
            return view(row, UNKNOWN, task, volumes, terms=terms, nics=nics)
        learnable = power_state == "running" and not row.ip_addresses and row.mac
        if learnable and self._addresses.learn_one(row.id, row.mac or "", host):
            row = row_and_task(self._db, row.id)[0]
            with self._db.read() as conn:
                nics = nic_dao.for_vms(conn, [row.id]).get(row.id, [])
        return view(row, power_state, task, volumes, terms=terms, nics=nics)

    def page(self, caller: Principal, *, status: str | None = None, name: str | None = None,
             limit: int = 1000, marker: str | None = None) -> list[VmView]:
        """A page of VMs with live state from one bulk libvirt call per host, made in parallel;
        a host that does not answer leaves its VMs' power state unknown.

        What the rows do not say (tasks, volumes, NICs, terms) is read on a pool thread
        while this one makes the libvirt calls, which let go of the GIL (counted as this
        request's own): a page of 1,000 on two cores is that much sooner.

        Raises: MarkerNotFound.
        """
        project = access.scope(caller)
        with self._db.read() as conn:
            after = vm_dao.get(conn, marker, project) if marker is not None else None
            if marker is not None and after is None:
                raise errors.MarkerNotFound(marker=marker)
            rows = vm_dao.list_page(conn, status=status, name=name, after=after, limit=limit,
                                    project=project)
        if not rows:
            return []
        reading = self._pool.submit(self._beside_rows, rows)
        states = self._power_states({row.host for row in rows if row.host})
        active, volumes, waits, terms, nics = reading.result()
        return [view(row, states.get(row.id, MISSING)
                     if row.host in states.answered or not row.host else UNKNOWN,
                     active.get(row.id), volumes.get(row.id), waits.get(row.id),
                     terms.get(row.id), nics.get(row.id))
                for row in rows]

    def _beside_rows(self, rows: list[vm_dao.VmRow]) -> _Beside:
        """What a page shows beside its rows, in grouped reads (never one per VM)."""
        with self._db.read() as conn:
            return (task_dao.active_by_vm(conn), volume_dao.attachments_for_vms(conn),
                    wait_dao.of_vms(conn, [row.id for row in rows if row.status == "queued"]),
                    terms_of(conn, rows), nic_dao.for_vms(conn, [row.id for row in rows]))

    def _power_states(self, names: set[str]) -> PowerStates:
        """Every domain's state on the named hosts that answer, asked in parallel."""
        up = {name: hypervisor for name in sorted(names)
              if (hypervisor := self._hosts.up_hypervisor(name)) is not None}
        found = PowerStates()
        if len(up) == 1:  # the common case: no thread hop
            results = [_states_of(*up.values())]
        else:
            results = list(self._pool.map(_states_of, up.values()))
        for name, states in zip(up, results, strict=True):
            if states is not None:
                found.answered.add(name)
                found.update(states)
        return found

    def events(self, id_or_name: str, limit: int, caller: Principal,
               project: str | None = None) -> list[task_dao.TaskRow]:
        """Every action recorded for the VM, newest first. Raises: VmNotFound, AmbiguousName."""
        scope = access.vm_scope(caller, id_or_name, project)
        with self._db.read() as conn:
            row = lookup(conn, id_or_name, scope)
            return task_dao.list_for_vm(conn, row.id, limit)

    def stats(self, id_or_name: str, caller: Principal,
              project: str | None = None) -> dict[str, object]:
        """CPU, memory, disk and NIC counters sampled over STATS_WINDOW_S.

        Raises: VmNotFound, AmbiguousName, VmNotRunning.
        """
        row, _ = row_and_task(self._db, id_or_name, access.vm_scope(caller, id_or_name, project))
        hypervisor = self._hosts.require_up(row.host).hypervisor
        try:
            first = hypervisor.stats(row.id)
            started = time.monotonic()
            time.sleep(STATS_WINDOW_S)
            second = hypervisor.stats(row.id)
            window = time.monotonic() - started
        except DomainNotFound:
            raise errors.VmNotRunning(vm=id_or_name) from None
        if second.get("state.state") not in (1, 2, 3):  # running, blocked, paused
            raise errors.VmNotRunning(vm=id_or_name)
        return {"vm_id": row.id, **summarize(first, second, window, row.cpu)}

    def console(self, id_or_name: str, lines: int, caller: Principal,
                project: str | None = None) -> str:
        """The last lines of the VM's serial console log ('' before the guest wrote any).

        Raises: VmNotFound, AmbiguousName.
        """
        row, _ = row_and_task(self._db, id_or_name, access.vm_scope(caller, id_or_name, project))
        data = self._console_tail(row.id, self._hosts.get(row.host))
        text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return "".join(text.splitlines(keepends=True)[-lines:])

    def task(self, task_id: str, caller: Principal, wait_s: int = 0) -> TaskAnswer:
        """The task, once finished or after wait_s (at most MAX_WAIT_S); at once, with a
        retry_after_s, when the caller's token or the server has no wait slot free.

        Raises: TaskNotFound, also for another project's task.
        """
        with self._db.read() as conn:
            row = task_dao.get(conn, task_id)
        if row is None or not access.sees_project(caller, row.project):
            raise errors.TaskNotFound(task=task_id)
        if not wait_s or row.status not in ACTIVE_TASK_STATUSES:
            return TaskAnswer(row)
        with self._waits.slot(caller.token_id) as granted:
            if not granted:
                return TaskAnswer(row, retry_after_s=POLL_AGAIN_S)
            return TaskAnswer(self._runner.wait(task_id, min(wait_s, MAX_WAIT_S)) or row)

