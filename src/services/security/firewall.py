"""Each VM's libvirt nwfilter, rendered from its groups' rules (a `group` source expands to the
members' IPv4 addresses) and defined on the VM's host. Every call reads the rows as they are
now, so running it again changes nothing."""
from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING

from src import errors
from src.database import security_groups as group_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.hypervisor.nwfilter_xml import (
    AllowRule,
    FilterSpec,
    filter_name,
    render_filter,
)
from src.hypervisor.nwfilters import FiltersUnsupported
from src.services.tasks.runner import TaskFailed, new_task_row
from src.services.tasks.steps import best_effort, step

if TYPE_CHECKING:
    from src.services.hosts.registry import Host, HostRegistry

log = logging.getLogger(__name__)
ACTION = "firewall"
_SKIPPED = ("deleting",)  # its filter goes with it
_ADDRESS_GONE = ("delete", "stop", "shutdown")  # the VM no longer holds its address


def _allowed(conn: sqlite3.Connection, rule: group_dao.RuleRow,
             vm_id: str) -> list[AllowRule]:
    ports = {"port_min": rule.port_min, "port_max": rule.port_max}
    if rule.cidr is not None:
        address, prefix = rule.cidr.split("/")
        source = None if prefix == "0" else address
        return [AllowRule(rule.protocol, source, int(prefix) if source else 0, **ports)]
    members = group_dao.members(conn, [rule.remote_group_id or ""])
    sources = sorted({entry["address"] for member in members if member != vm_id
                      for entry in (getattr(vm_dao.get(conn, member), "ip_addresses", None) or [])
                      if entry.get("family") == "ipv4"})
    return [AllowRule(rule.protocol, address, 32, **ports) for address in sources]


def spec_of(conn: sqlite3.Connection, vm_id: str) -> FilterSpec:
    """The VM's filter as its groups say now."""
    groups = [group.id for group in group_dao.groups_of(conn, vm_id)]
    rules: list[AllowRule] = []
    for rule in group_dao.rules_of(conn, groups) if groups else []:
        rules += [found for found in _allowed(conn, rule, vm_id) if found not in rules]
    return FilterSpec(vm_id, tuple(rules))


def affected_by_members(conn: sqlite3.Connection, group_ids: list[str]) -> list[str]:
    """The VMs whose filters name the members of these groups (their addresses)."""
    watching = group_dao.watchers(conn, group_ids) if group_ids else []
    return group_dao.members(conn, watching) if watching else []


class Firewall:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._unfiltered: set[str] = set()  # hosts without nwfilter, told once

    def _lock(self, vm_id: str) -> threading.Lock:
        """One define at a time per VM in this process, so an older rendering never lands
        after a newer one."""
        with self._guard:
            return self._locks.setdefault(vm_id, threading.Lock())

    def put(self, vm_id: str, host: Host, undo: ExitStack | None = None) -> str:
        """Define the VM's filter on host (a build, a migration's target: before the domain);
        undo, when given, gets the step that brings back what host held before. Returns the
        filter's name, for the domain's NICs.

        Raises: TaskFailed (firewall_failed), HypervisorUnavailable.
        """
        with self._lock(vm_id):
            return self._define(vm_id, host, undo)

    def _define(self, vm_id: str, host: Host, undo: ExitStack | None) -> str:
        """put's work; the caller holds the VM's lock."""
        name = filter_name(vm_id)
        if host.name in self._unfiltered:
            return name  # no nwfilter driver there (said once): nothing to ask libvirt
        with self._db.read() as conn:
            xml = render_filter(spec_of(conn, vm_id))
        log.debug("nwfilter XML for %s:\n%s", vm_id, xml)
        filters = host.hypervisor.filters
        with step("firewall_failed"):
            before = filters.xml_of(name)
            try:
                filters.define(xml)
            except FiltersUnsupported:
                if host.name not in self._unfiltered:
                    self._unfiltered.add(host.name)
                    log.warning("host %s has no nwfilter driver: VMs' filters are not "
                                "defined there", host.name)
                return name
        if undo is not None:
            undo.callback(best_effort, "restore nwfilter", self._restore, host, name, before)
        return name

    @staticmethod
    def _restore(host: Host, name: str, before: str | None) -> None:
        if before is None:
            host.hypervisor.filters.undefine(name)
        else:
            host.hypervisor.filters.define(before)

    def remove(self, vm_id: str, host: Host) -> None:
        """Remove the VM's filter from host, once no domain there uses it.

        Raises: TaskFailed (firewall_failed), HypervisorUnavailable.
        """
        with self._lock(vm_id), step("firewall_failed"):
            host.hypervisor.filters.undefine(filter_name(vm_id))

    def refresh(self, vm_ids: list[str], hosts: HostRegistry) -> None:
        """Bring each VM's filter on its host up to date; libvirt applies it to running NICs
        at once. A failure puts back the filters redefined before it.

        Raises: TaskFailed, HypervisorUnavailable (the task waits for the host).
        """
        with ExitStack() as undo:
            for vm_id in vm_ids:
                # The row is read under the VM's lock, which a delete's remove takes too: a
                # refresh that read the VM before its delete began never defines its filter
                # again after the delete removed it.
                with self._lock(vm_id):
                    with self._db.read() as conn:
                        row = vm_dao.get(conn, vm_id)
                    if row is None or not row.host or row.status in _SKIPPED:
                        continue  # gone, never placed, or going
                    self._define(vm_id, hosts.get(row.host), undo)
            undo.pop_all()


def settle(firewall: Firewall, db: Database, hosts: HostRegistry) -> int:
    """Refresh the filters marked pending whose VMs have no task under way (a housekeeping
    pass: background changes such as a member's new address take no task, so they never make
    a VM busy); how many. A failure leaves the VM pending for the next pass."""
    with db.read() as conn:
        pending = group_dao.pending(conn)
    done = 0
    for vm_id in pending:
        with db.write() as conn:
            if task_dao.active_for_vm(conn, vm_id) is not None:
                continue  # its own task ends first
            group_dao.take_pending(conn, vm_id)
        try:
            firewall.refresh([vm_id], hosts)
            done += 1
        except (TaskFailed, HypervisorError) as exc:
            log.warning("nwfilter of vm %s not refreshed (next pass tries again): %s", vm_id,
                        exc)
            with db.write() as conn:
                if vm_dao.get(conn, vm_id) is not None:
                    group_dao.mark_pending(conn, vm_id)
    return done


class FirewallTasks:
    """Queue the tasks (action `firewall`, one per VM) that bring VMs' filters up to date. A VM
    busy with another task is marked pending instead: `settle` refreshes it once that ends."""

    def __init__(self, db: Database, executor: str) -> None:
        """executor: the name the tasks are queued for (inprocess or celery)."""
        self._db = db
        self._executor = executor
        self._submit: Callable[[task_dao.TaskRow], object] = lambda _task: None

    def bind(self, submit: Callable[[task_dao.TaskRow], object]) -> None:
        """Queued tasks are handed to submit (the executor's) once their change committed; a
        Celery worker's are left to the API's outbox relay."""
        self._submit = submit

    def queue(self, conn: sqlite3.Connection, vm_ids: list[str], request_id: str | None,
              required: str | None = None) -> list[task_dao.TaskRow]:
        """Insert the tasks in the caller's transaction (submit them after the commit).
        required: the VM the change is about, which must not be busy.

        Raises: VmBusy (required has a task under way).
        """
        tasks = []
        for vm_id in sorted(set(vm_ids)):
            row = vm_dao.get(conn, vm_id)
            if row is None or (vm_id != required and (not row.host or row.status in _SKIPPED)):
                continue  # never placed: its build defines the filter as the rows say then
            active = task_dao.active_for_vm(conn, vm_id)
            if active is not None:
                if vm_id == required:
                    raise errors.VmBusy(vm=row.name, task_id=active.id, action=active.action)
                group_dao.mark_pending(conn, vm_id)
                continue
            task = replace(new_task_row(vm_id, ACTION, request_id, row.project, row.host or None),
                           executor=self._executor)
            task_dao.insert(conn, task)
            tasks.append(task)
        return tasks

    def mark(self, conn: sqlite3.Connection, vm_ids: list[str]) -> None:
        """Leave the refresh of these VMs' filters to the next housekeeping pass (no task)."""
        for vm_id in vm_ids:
            group_dao.mark_pending(conn, vm_id)

    def submit(self, tasks: list[task_dao.TaskRow]) -> None:
        for task in tasks:
            self._submit(task)

    def after_task(self, task: task_dao.TaskRow) -> None:
        """A VM deleted or stopped gave its address up: the filters that let group members in
        are rewritten (by the next housekeeping pass, Firewall.settle)."""
        if task.vm_id is None or task.action not in _ADDRESS_GONE or task.status != "succeeded":
            return
        with self._db.write() as conn:
            for vm_id in group_dao.watching_members(conn, task.project):
                group_dao.mark_pending(conn, vm_id)
