"""Evacuate a host that is down: each of its VMs is rebuilt on another host (the scheduler's
pick, the filters of a create), one task each; the target's claim, the task and the VM's hold
are taken in one transaction per VM. VMs that cannot go anywhere are listed with the reason.

A VM keeps its disks and volumes when their files are reachable from the new host (the dead
host shared this machine's storage, and the file is there); what lived only on the dead host
is rebuilt only when asked (rebuild_lost_disks: a fresh root disk from the base image, its
volumes left detached on the dead host)."""
from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from src import errors
from src.config import Config
from src.database import flavors as flavor_dao
from src.database import gpus as gpu_dao
from src.database import host_evacuations as host_evac_dao
from src.database import partitions as partition_dao
from src.database import snapshots as snapshot_dao
from src.database import tasks as task_dao
from src.database import vm_evacuations as evac_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.database.host_evacuations import HostEvacuationRow
from src.database.vm_evacuations import EvacuationRow
from src.services.hosts.admin import HostService
from src.services.hosts.capacity import Capacity
from src.services.hosts.registry import Host, HostRegistry
from src.services.rules import access
from src.services.rules.access import Principal
from src.services.rules.placement import Demand
from src.services.tasks.runner import Executor, new_task_row
from src.services.vms.disks import SharedDisks
from src.services.vms.flavors import demand_of
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

EVACUABLE = ("running", "paused", "stopped")  # building, deleting, queued and error VMs stay
LOST = "disks_on_down_host"


class Skip(Exception):
    """The VM stays on the dead host: reason (a stable code) and message say why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Reach:
    """What of a VM's data the other hosts can still reach."""

    root: bool  # its root disk (and seed): the dead host shared them, and the file is there
    kept_volumes: list[str] = field(default_factory=list)  # volume ids
    lost_volumes: list[dict[str, str]] = field(default_factory=list)  # volume_id, name, device

    @property
    def whole(self) -> bool:
        return self.root and not self.lost_volumes

    @property
    def needs_shared(self) -> bool:
        """Files it keeps are this machine's: only a host sharing them can use them."""
        return self.root or bool(self.kept_volumes)


class EvacuationService:
    def __init__(self, db: Database, config: Config, hosts: HostRegistry, capacity: Capacity,
                 host_views: HostService, shared: SharedDisks, executor: Executor) -> None:
        self._db = db
        self._config = config
        self._hosts = hosts
        self._capacity = capacity
        self._host_views = host_views
        self._shared = shared
        self._executor = executor

    def evacuate(self, name: str, caller: Principal, rebuild_lost_disks: bool = False,
                 target: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """Queue the rebuild of each VM of the down host name elsewhere; the tasks and the VMs
        that stay. The host is disabled: it takes no VMs when it comes back until enabled.

        Raises: Forbidden, HostNotFound, HostNotDown (it answers: drain it instead),
        HostNotFoundInRequest (target), BadRequest (target is the host itself).
        """
        access.require_admin(caller)
        dead = self._hosts.get(name)
        if self._hosts.is_up(name) or self._hosts.check(dead):
            raise errors.HostNotDown(host=name)
        every = self._hosts.all()
        if target is not None and target not in {host.name for host in every}:
            raise errors.HostNotFoundInRequest(host=target)
        if target == name:
            raise errors.BadRequest(reason=f"The target host {target!r} is the host being "
                                           "evacuated.")
        if dead.row.enabled:
            self._host_views.update(name, {"enabled": False})
        with self._db.read() as conn:
            vms = vm_dao.list_on(conn, name)
        tasks: list[dict[str, str]] = []
        skipped: list[dict[str, str]] = []
        for row in vms:
            try:
                tasks.append(self._queue(row, dead, every, rebuild_lost_disks, target,
                                         request_id))
            except Skip as skip:
                skipped.append({"vm_id": row.id, "vm": row.name, "reason": skip.reason,
                                "message": skip.message})
        started = utc_now()
        with self._db.write() as conn:
            host_evac_dao.put(conn, HostEvacuationRow(name, started, rebuild_lost_disks,
                                                      tasks, skipped))
        log.warning("evacuating host %s: %d rebuild(s) queued, %d VM(s) stay", name,
                    len(tasks), len(skipped))
        return {"host": name, "started_at": started, "rebuild_lost_disks": rebuild_lost_disks,
                "tasks": tasks, "skipped": skipped}

    def _queue(self, row: vm_dao.VmRow, dead: Host, every: list[Host], rebuild: bool,
               target: str | None, request_id: str | None) -> dict[str, str]:
        """Claim a target for the VM and queue its rebuild. Raises: Skip."""
        if row.status not in EVACUABLE:
            raise Skip("invalid_state", f"it is {row.status}; only running, paused and "
                                        "stopped VMs are rebuilt")
        reach = self._reach(row, dead)
        if not reach.whole and not rebuild:
            raise Skip(LOST, self._lost_words(reach, dead.name))
        with self._db.read() as conn:
            if partition_dao.for_vm(conn, row.id):
                raise Skip("gpu_partition", "it runs on a GPU partition, which evacuation "
                                            "does not rebuild yet")
        hosts = self._targets(row, dead, every, reach, target)
        demand = self._demand(row, reach)
        start = row.status != "stopped"
        task = replace(new_task_row(row.id, "evacuate", request_id, row.project),
                       payload=json.dumps({"args": {"rebuild_lost_disks": rebuild}}),
                       executor=self._executor.name)
        capacities = self._capacity.known(hosts)
        try:
            with self._db.write() as conn:
                current = vm_dao.get(conn, row.id)
                if current is None or current.host != dead.name:
                    raise Skip("vm_gone", "it left the host meanwhile")
                active = task_dao.active_for_vm(conn, row.id)
                if active is not None:
                    raise Skip("vm_busy", f"its task {active.id} ({active.action}) is under "
                                          "way; evacuate again once it has ended")
                chosen, claim = self._capacity.claim(conn, demand, hosts, capacities, target)
                task = replace(task, host=chosen, reason=self._history(row, reach, dead.name,
                                                                       chosen))
                task_dao.insert(conn, task)
                now = utc_now()
                evac_dao.insert(conn, EvacuationRow(
                    task_id=task.id, vm_id=row.id, vm_name=row.name, source=dead.name,
                    target=chosen, phase="queued", keeps_disks=reach.root, start=start,
                    cpu=demand.cpu, ram=demand.ram, disk_gb=demand.disk_gb, created_at=now,
                    updated_at=now, numa_node=claim.numa_node, node_cpus=list(claim.node_cpus),
                    pinned_cpus=list(claim.pinned_cpus), lost_volumes=reach.lost_volumes))
                gpu_dao.allocate(conn, chosen, [gpu.id for gpu in claim.gpus], row.id, now)
        except errors.InsufficientCapacity as exc:
            raise Skip(exc.code, exc.message) from None
        except sqlite3.IntegrityError:
            raise Skip("vm_busy", "another task took it meanwhile") from None
        self._executor.submit(task)
        return {"task_id": task.id, "vm_id": row.id, "vm": row.name, "target": chosen}

    def _reach(self, row: vm_dao.VmRow, dead: Host) -> Reach:
        shared = dead.row.storage == "shared"
        with self._db.read() as conn:
            top = snapshot_dao.root_top(conn, row.id) or self._shared.root_layer(row.id)
            attached = volume_dao.attachments_for_vms(conn, [row.id]).get(row.id, [])
            volumes = {a.volume_id: volume_dao.get(conn, a.volume_id) for a in attached}
        root = shared and Path(self._shared.layer_path(row.id, top)).is_file()
        kept: list[str] = []
        lost: list[dict[str, str]] = []
        for attachment in attached:
            volume = volumes[attachment.volume_id]
            if shared and volume is not None and volume.top_layer is not None and (
                    self._config.volumes_dir / volume.top_layer).is_file():
                kept.append(attachment.volume_id)
            else:
                lost.append({"volume_id": attachment.volume_id, "name": attachment.volume_name,
                             "device": attachment.device})
        return Reach(root, kept, lost)

    def _targets(self, row: vm_dao.VmRow, dead: Host, every: list[Host], reach: Reach,
                 target: str | None) -> list[Host]:
        """Raises: Skip (no host may take it, or not the one asked for)."""
        unfit: dict[str, str] = {}
        fit: list[Host] = []
        for host in every:
            if host.name == dead.name:
                continue
            if host.row.domain_type != dead.row.domain_type:
                unfit[host.name] = f"runs {host.row.domain_type} domains, not " \
                                   f"{dead.row.domain_type}"
            elif reach.needs_shared and host.row.storage != "shared":
                unfit[host.name] = "does not share this machine's storage, where its disks are"
            else:
                fit.append(host)
        if target is not None:
            if target in unfit:
                raise Skip("target_unfit", f"host {target} {unfit[target]}")
            fit = [host for host in fit if host.name == target]
        if not fit:
            reasons = "; ".join(f"{name} {why}" for name, why in sorted(unfit.items()))
            raise Skip("no_host", "no other host can take it" + (
                f" ({reasons})" if reasons else ": there is no other host"))
        return fit

    def _demand(self, row: vm_dao.VmRow, reach: Reach) -> Demand:
        """Its own sizes (and its kept volumes': they come along), GPUs and placement rules as
        its flavor says."""
        with self._db.read() as conn:
            flavor = flavor_dao.get(conn, row.flavor_name) if row.flavor_name else None
            volumes_gb = sum(volume.size_gb for volume_id in reach.kept_volumes
                             if (volume := volume_dao.get(conn, volume_id)) is not None)
        rules = demand_of(flavor) if flavor is not None else Demand(cpu=row.cpu, ram=row.ram)
        return replace(rules, cpu=row.cpu, ram=row.ram, disk_gb=row.disk_gb + volumes_gb,
                       gpu_count=len(row.gpus))

    @staticmethod
    def _lost_words(reach: Reach, dead: str) -> str:
        parts = [] if reach.root else ["its root disk"]
        if reach.lost_volumes:
            parts.append("its volume(s) " + ", ".join(v["name"] for v in reach.lost_volumes))
        return (f"{' and '.join(parts)} lived only on host {dead}; evacuate with "
                "rebuild_lost_disks: true to rebuild it (a fresh root disk from its base image, "
                "its lost volumes detached)")

    @staticmethod
    def _history(row: vm_dao.VmRow, reach: Reach, dead: str, chosen: str) -> str:
        """What the VM's events say of its rebuild."""
        words = f"host {dead} is down: rebuilt on {chosen}"
        if reach.root:
            words += " with its own root disk"
        else:
            words += (f" with a fresh root disk from its base image {row.image_name} (the old "
                      f"one, and its snapshots, lived only on {dead})")
        if reach.lost_volumes:
            words += ("; volume(s) " + ", ".join(v["name"] for v in reach.lost_volumes)
                      + f" stay detached on {dead}")
        return words
