"""Security groups of a project: create, read, change rules, delete, and attach to VMs. Every
change that reaches VMs queues one `firewall` task, in the change's own transaction."""
from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from src import errors
from src.database import security_groups as group_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services.rules import access, quotas
from src.services.rules.access import Principal
from src.services.security import rules as rule_rules
from src.services.security.firewall import FirewallTasks, affected_by_members
from src.services.security.rules import RuleRequest
from src.utils.clock import utc_now


@dataclass(frozen=True)
class GroupView:
    row: group_dao.GroupRow
    rules: list[dict[str, Any]]
    vms: list[str]  # ids of the VMs it is attached to
    tasks: tuple[task_dao.TaskRow, ...] = ()  # the firewall tasks a change queued


@dataclass(frozen=True)
class GroupCreate:
    """A validated POST /v1/security-groups body."""

    name: str
    description: str = ""
    rules: list[dict[str, Any]] = field(default_factory=list)


def ensure_default(conn: sqlite3.Connection, project: str) -> None:
    """A project without a group of its own gets `default` (outside its quota)."""
    if group_dao.count(conn, project):
        return
    now = utc_now()
    group = group_dao.GroupRow(str(uuid.uuid4()), project, rule_rules.DEFAULT_NAME,
                               rule_rules.DEFAULT_DESCRIPTION, now, now)
    group_dao.insert(conn, group)
    for rule in rule_rules.DEFAULT_RULES:
        group_dao.add_rule(conn, rule_rules.stored(conn, rule, group, now))


def attach_at_create(conn: sqlite3.Connection, vm_id: str, project: str,
                     names: Iterable[str]) -> None:
    """Attach a new VM's groups (in its create's transaction).

    Raises: SecurityGroupNotFoundInRequest.
    """
    ensure_default(conn, project)
    for name in names:
        group = group_dao.get(conn, project, name)
        if group is None:
            raise errors.SecurityGroupNotFoundInRequest(group=name)
        group_dao.attach(conn, vm_id, group.id)


def _rule_requests(rules: list[dict[str, Any]]) -> list[RuleRequest]:
    return [RuleRequest(**rule) for rule in rules]


class SecurityGroupService:
    def __init__(self, db: Database, tasks: FirewallTasks) -> None:
        self._db = db
        self._tasks = tasks

    def _project(self, caller: Principal, project: str | None) -> str:
        """The project the caller acts in: its own, or (admins) the one named.

        Raises: ProjectNotFound (a member naming another project)."""
        if project is None:
            return caller.project
        access.check_project(caller, project)
        return project

    def _group(self, conn: sqlite3.Connection, project: str,
               ref: str) -> group_dao.GroupRow:
        group = group_dao.get(conn, project, ref)
        if group is None:
            raise errors.SecurityGroupNotFound(group=ref)
        return group

    def _view(self, conn: sqlite3.Connection, group: group_dao.GroupRow,
              tasks: list[task_dao.TaskRow] | None = None) -> GroupView:
        rows = group_dao.rules_of(conn, [group.id])
        names = {row.id: row.name for row in group_dao.list_all(conn, group.project)}
        return GroupView(group, [rule_rules.shown(rule, names) for rule in rows],
                         group_dao.members(conn, [group.id]), tuple(tasks or ()))

    def show(self, ref: str, caller: Principal, project: str | None = None) -> GroupView:
        """Raises: SecurityGroupNotFound, ProjectNotFound."""
        scope = self._project(caller, project)
        with self._db.write() as conn:
            ensure_default(conn, scope)
            return self._view(conn, self._group(conn, scope, ref))

    def create(self, body: GroupCreate, caller: Principal,
               project: str | None = None) -> GroupView:
        """Raises: ValidationFailed, SecurityGroupNotFoundInRequest, NameConflict,
        QuotaExceeded (security_groups), TooManyRules, ProjectNotFound."""
        scope = self._project(caller, project)
        requests = _rule_requests(body.rules)
        now = utc_now()
        group = group_dao.GroupRow(str(uuid.uuid4()), scope, body.name, body.description,
                                   now, now)
        try:
            with self._db.write() as conn:
                if body.name != rule_rules.DEFAULT_NAME:
                    ensure_default(conn, scope)
                quotas.enforce(conn, scope, {"security_groups": 1})
                group_dao.insert(conn, group)
                self._add(conn, group, requests, now)
                return self._view(conn, group)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="security group", name=body.name) from None

    @staticmethod
    def _add(conn: sqlite3.Connection, group: group_dao.GroupRow,
             requests: list[RuleRequest], now: str) -> None:
        """Raises: ValidationFailed, SecurityGroupNotFoundInRequest, TooManyRules."""
        have = len(group_dao.rules_of(conn, [group.id]))
        if have + len(requests) > rule_rules.MAX_RULES:
            raise errors.TooManyRules(group=group.name, limit=rule_rules.MAX_RULES)
        for request in requests:
            group_dao.add_rule(conn, rule_rules.stored(conn, request, group, now))
        group_dao.touch(conn, group.id, now)

    def delete(self, ref: str, caller: Principal, project: str | None = None) -> None:
        """Raises: SecurityGroupNotFound, SecurityGroupInUse (attached, or another group's
        rules name it), ProjectNotFound."""
        scope = self._project(caller, project)
        with self._db.write() as conn:
            group = self._group(conn, scope, ref)
            vms = group_dao.members(conn, [group.id])
            if vms:
                raise errors.SecurityGroupInUse(group=group.name,
                                                reason=f"attached to {len(vms)} VM(s)", vms=vms)
            others = group_dao.referencing(conn, group.id)
            if others:
                names = {row.id: row.name for row in group_dao.list_all(conn, scope)}
                raise errors.SecurityGroupInUse(
                    group=group.name, reason="rules of other groups let its members in",
                    groups=sorted(names.get(other, other) for other in others))
            group_dao.delete(conn, group.id)

    def change_rules(self, ref: str, add: list[dict[str, Any]], remove: list[str],
                     caller: Principal, request_id: str | None = None,
                     project: str | None = None, replace_all: bool = False) -> GroupView:
        """Add rules, remove rules by id, or (replace_all) put add in place of every rule;
        its members' filters are refreshed by the task the view carries.

        Raises: SecurityGroupNotFound, SecurityGroupRuleNotFound, ValidationFailed,
        SecurityGroupNotFoundInRequest, TooManyRules, ProjectNotFound.
        """
        scope = self._project(caller, project)
        requests = _rule_requests(add)
        now = utc_now()
        with self._db.write() as conn:
            group = self._group(conn, scope, ref)
            if replace_all:
                group_dao.delete_rules(conn, group.id)
            for rule_id in remove:
                if not group_dao.delete_rule(conn, group.id, rule_id):
                    raise errors.SecurityGroupRuleNotFound(rule=rule_id, group=group.name)
            self._add(conn, group, requests, now)
            tasks = self._tasks.queue(conn, group_dao.members(conn, [group.id]), request_id)
            view = self._view(conn, group, tasks)
        self._tasks.submit(tasks)
        return view

    def attach(self, vm: str, ref: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Attach a group of the VM's project; a running VM's filter changes at once.

        Raises: VmNotFound, AmbiguousName, SecurityGroupNotFoundInRequest, VmBusy.
        """
        return self._membership(vm, ref, caller, request_id, project, attach=True)

    def detach(self, vm: str, ref: str, caller: Principal, request_id: str | None = None,
               project: str | None = None) -> task_dao.TaskRow:
        """Raises: VmNotFound, AmbiguousName, SecurityGroupNotAttached, VmBusy."""
        return self._membership(vm, ref, caller, request_id, project, attach=False)

    def _membership(self, vm: str, ref: str, caller: Principal, request_id: str | None,
                    project: str | None, attach: bool) -> task_dao.TaskRow:
        scope = access.vm_scope(caller, vm, project)
        with self._db.write() as conn:
            found = vm_dao.find(conn, vm, scope)
            if not found:
                raise errors.VmNotFound(vm=vm)
            if len(found) > 1:
                raise errors.AmbiguousName(name=vm, count=len(found),
                                           ids=[row.id for row in found])
            row = found[0]
            ensure_default(conn, row.project)
            group = group_dao.get(conn, row.project, ref)
            if attach:
                if group is None:
                    raise errors.SecurityGroupNotFoundInRequest(group=ref)
                group_dao.attach(conn, row.id, group.id)
            elif group is None or not group_dao.detach(conn, row.id, group.id):
                raise errors.SecurityGroupNotAttached(group=ref, vm=vm)
            tasks = self._tasks.queue(conn, [row.id, *affected_by_members(conn, [group.id])],
                                      request_id, required=row.id)
        self._tasks.submit(tasks)
        return next(task for task in tasks if task.vm_id == row.id)

    def after_addresses(self, vm_ids: list[str]) -> None:
        """VMs' addresses changed: the filters that let them in by group are rewritten by the
        next housekeeping pass (no task: nothing becomes busy)."""
        with self._db.write() as conn:
            groups = sorted({group.id for vm_id in vm_ids
                             for group in group_dao.groups_of(conn, vm_id)})
            self._tasks.mark(conn, affected_by_members(conn, groups))

    def list(self, caller: Principal, project: str | None = None) -> list[GroupView]:
        """The project's groups (its default made on first use); admins without project:
        every project's. Raises: ProjectNotFound."""
        scope = self._project(caller, project) if project or not caller.is_admin else None
        with self._db.write() as conn:
            if scope is not None:
                ensure_default(conn, scope)
            return [self._view(conn, group) for group in group_dao.list_all(conn, scope)]
