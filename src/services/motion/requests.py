"""Accept a VM's migration: check it can move, let the scheduler pick (or check) its target, and
hold the target's claim and the VM in one transaction with the task that moves it."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from urllib.parse import urlsplit

from src import errors
from src.database import flavors as flavor_dao
from src.database import gpus as gpu_dao
from src.database import partitions as partition_dao
from src.database import tasks as task_dao
from src.database import vm_migrations as move_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.database.vm_migrations import MigrationRow
from src.services.hosts.capacity import Capacity
from src.services.hosts.registry import Host, HostRegistry
from src.services.motion import nics
from src.services.rules import access
from src.services.rules.access import Principal
from src.services.rules.placement import Demand
from src.services.tasks.runner import Executor, new_task_row
from src.services.vms.flavors import demand_of
from src.services.vms.reads import row_and_task
from src.utils.clock import utc_now

MOVABLE = ("running", "paused", "stopped")  # building, deleting and error VMs stay put


class MigrationService:
    def __init__(self, db: Database, hosts: HostRegistry, capacity: Capacity,
                 executor: Executor) -> None:
        self._db = db
        self._hosts = hosts
        self._capacity = capacity
        self._executor = executor

    def migrate(self, vm: str, caller: Principal, target: str | None = None, live: bool = True,
                request_id: str | None = None, project: str | None = None) -> task_dao.TaskRow:
        """Queue the VM's move to target (None: the scheduler's pick, never its own host).

        Raises: Forbidden, VmNotFound, AmbiguousName, HostUnavailable (its host does not
        answer), InvalidState, VmNotMigratable (with the reason), HostNotFoundInRequest,
        InsufficientCapacity, VmBusy.
        """
        access.require_admin(caller)
        row, _ = row_and_task(self._db, vm, access.vm_scope(caller, vm, project))
        return self.queue(row, vm, target, live, request_id)

    def queue(self, row: vm_dao.VmRow, vm: str, target: str | None, live: bool,
              request_id: str | None, drain: str | None = None) -> task_dao.TaskRow:
        """Queue the move of the VM of row (vm: its name as asked); drain: the host whose drain
        asks, whose moves wait their turn (IAAS_DRAIN_PARALLEL).

        Raises: as migrate does, but Forbidden and VmNotFound.
        """
        source = self._hosts.require_up(row.host)
        if row.status not in MOVABLE:
            raise errors.InvalidState(f"Only a running, paused or stopped VM can be migrated; "
                                      f"this one is {row.status}.", action="migrate",
                                      status=row.status, allowed=[])
        live = live and row.status != "stopped"
        reason = self.refusal(row, live)
        if reason is not None:
            raise errors.VmNotMigratable(vm=vm, reason=reason)
        hosts = self._targets(vm, row, source, live, target)
        demand = self._demand(row)
        task = replace(new_task_row(row.id, "migrate", request_id, row.project, row.host),
                       payload=json.dumps({"args": {"live": live} | (
                           {"drain": drain} if drain else {})}),
                       executor=self._executor.name)
        capacities = self._capacity.known(hosts)
        with self._db.write() as conn:
            current = vm_dao.get(conn, row.id)
            if current is None:
                raise errors.VmNotFound(vm=vm)
            active = task_dao.active_for_vm(conn, row.id)
            if active is not None:
                raise errors.VmBusy(vm=vm, task_id=active.id, action=active.action)
            chosen, claim = self._capacity.claim(conn, demand, hosts, capacities, target)
            try:
                task_dao.insert(conn, task)
            except sqlite3.IntegrityError:
                raise errors.VmBusy(vm=vm) from None
            now = utc_now()
            move_dao.insert(conn, MigrationRow(
                task_id=task.id, vm_id=row.id, source=row.host, target=chosen, live=live,
                phase="queued", cpu=demand.cpu, ram=demand.ram, disk_gb=demand.disk_gb,
                created_at=now, updated_at=now, numa_node=claim.numa_node,
                node_cpus=list(claim.node_cpus), pinned_cpus=list(claim.pinned_cpus)))
            gpu_dao.allocate(conn, chosen, [gpu.id for gpu in claim.gpus], row.id, now)
        self._executor.submit(task)
        return task

    def refusal(self, row: vm_dao.VmRow, live: bool) -> str | None:
        """Why the VM cannot move as asked, or None."""
        if live and row.gpus:
            return (f"it has GPUs passed through ({', '.join(row.gpus)}), which QEMU cannot "
                    "migrate live; migrate it with live: false (it is stopped, moved and "
                    "started again with GPUs of the target)")
        with self._db.read() as conn:
            split = partition_dao.for_vm(conn, row.id)
            attached = volume_dao.attachments_for_vms(conn, [row.id]).get(row.id, [])
            shared = volume_dao.attachments_of(conn, [a.volume_id for a in attached])
            busy = [a.volume_name for a in attached
                    if task_dao.active_for_volume(conn, a.volume_id) is not None]
        if split:  # its mdev or VF belongs to its host's GPU; the target's ledger has none
            return ("it runs on a GPU partition of its host "
                    f"({', '.join(held.address or held.type_id for held in split)}), which "
                    "cannot move with it; delete it and create it again")
        others = sorted({a.volume_name for a in attached
                         for other in shared[a.volume_id] if other.vm_id != row.id})
        if others:
            return (f"its volume(s) {', '.join(others)} are attached to other VMs too, which "
                    "stay on this host")
        if busy:
            return f"its volume(s) {', '.join(busy)} are busy with a task; wait for it to end"
        return None

    def _targets(self, vm: str, row: vm_dao.VmRow, source: Host, live: bool,
                 target: str | None) -> list[Host]:
        """The hosts the VM may go to (all but its own, of its domain type, and reachable by
        its host's libvirtd for a live move).

        Raises: HostNotFoundInRequest, VmNotMigratable.
        """
        every = self._hosts.all()
        if target is not None and target not in {host.name for host in every}:
            raise errors.HostNotFoundInRequest(host=target)
        if target == row.host:
            raise errors.VmNotMigratable(vm=vm, reason=f"it is on host {target} already")
        unfit = {host.name: why for host in every if host.name != row.host
                 and (why := _unfit(host, source, live)) is not None}
        unfit |= {name: why for name, why in nics.lacking(
            [host for host in every if host.name != row.host and host.name not in unfit
             and self._hosts.is_up(host.name)],
            nics.named(self._db, row.id, source)).items()}
        fit = [host for host in every if host.name != row.host and host.name not in unfit]
        if target is not None and target in unfit:
            raise errors.VmNotMigratable(vm=vm, reason=f"host {target} {unfit[target]}")
        if not fit:
            reasons = "; ".join(f"{name} {why}" for name, why in sorted(unfit.items()))
            raise errors.VmNotMigratable(vm=vm, reason="no other host can take it" + (
                f" ({reasons})" if reasons else ": there is no other host"))
        return fit

    def _demand(self, row: vm_dao.VmRow) -> Demand:
        """What the VM takes on its target: its own sizes (its volumes' too: they move with it),
        GPUs and placement rules as its flavor says."""
        with self._db.read() as conn:
            flavor = flavor_dao.get(conn, row.flavor_name) if row.flavor_name else None
            attached = volume_dao.attachments_for_vms(conn, [row.id]).get(row.id, [])
            volumes_gb = sum(volume.size_gb for a in attached
                             if (volume := volume_dao.get(conn, a.volume_id)) is not None)
        rules = demand_of(flavor) if flavor is not None else Demand(cpu=row.cpu, ram=row.ram)
        return replace(rules, cpu=row.cpu, ram=row.ram, disk_gb=row.disk_gb + volumes_gb,
                       gpu_count=len(row.gpus))


def _unfit(host: Host, source: Host, live: bool) -> str | None:
    """Why host cannot take a VM of source, or None."""
    if host.row.domain_type != source.row.domain_type:
        return (f"runs {host.row.domain_type} domains, not {source.row.domain_type} as "
                f"{source.name}")
    if live and not urlsplit(host.row.uri).hostname:
        return (f"has a URI without an address ({host.row.uri}) that {source.name}'s libvirtd "
                "could dial for a live migration")
    return None
