"""What each host has and has free: its CPUs, memory, NUMA cells and disk (read from libvirt,
cached), minus what its VMs and volumes hold (the usage counters kept with every claim and
release, src/database/hosts.py). Claims run inside the caller's BEGIN IMMEDIATE transaction,
so two creates can never both take the last GPU or vCPU of a host."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from src import errors
from src.database import gpus as gpu_dao
from src.database import hosts as host_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.services.hosts.registry import Host, HostRegistry
from src.services.rules.placement import Claim, Demand, Free, HostCapacity, limited_by
from src.services.rules.scheduler import Candidate, NoHostFits, requested, schedule

GIB = 1024 ** 3


@dataclass(frozen=True)
class HostAvailability:
    host: str
    available: int
    limited_by: str


class Capacity:
    def __init__(self, db: Database, hosts: HostRegistry, policy: str,
                 shared_disk_gb: Callable[[], int]) -> None:
        self._db = db
        self._hosts = hosts
        self._policy = policy
        self._shared_disk_gb = shared_disk_gb  # the instances filesystem, for shared storage
        self._cache: dict[str, HostCapacity] = {}
        self._lock = threading.Lock()

    def of(self, host: Host) -> HostCapacity:
        """A host's capacity, read from libvirt once (and again after forget).

        Raises: HypervisorError.
        """
        with self._lock:
            cached = self._cache.get(host.name)
        if cached is not None:
            return cached
        facts = host.hypervisor.host
        cpus, ram_mib, nodes = facts.resources()
        cells = facts.numa_cpus() or _even_cells(cpus, nodes)
        row = host.row
        disk_bytes = (host.hypervisor.pools.capacity_bytes(row.storage_pool)
                      if row.storage == "pool" else None)
        capacity = HostCapacity(
            vcpus=int(cpus * row.cpu_allocation_ratio),
            ram_mib=int(ram_mib * row.ram_allocation_ratio), cells=cells,
            disk_gb=self._shared_disk_gb() if disk_bytes is None else disk_bytes // GIB)
        with self._lock:
            self._cache[host.name] = capacity
        return capacity

    def forget(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def known(self, hosts: list[Host]) -> dict[str, HostCapacity]:
        """The capacity of every host that is up and answers; others are left out."""
        found = {}
        for host in hosts:
            if not self._hosts.is_up(host.name):
                continue
            try:
                found[host.name] = self.of(host)
            except HypervisorError:
                continue
        return found

    def claim(self, conn: sqlite3.Connection, demand: Demand, hosts: list[Host],
              capacities: dict[str, HostCapacity], pinned: str | None = None) -> tuple[str, Claim]:
        """(host, claim) for demand, inside the caller's write transaction.

        Raises: InsufficientCapacity naming the closest miss and the hosts each filter rejected.
        """
        considered = [host for host in hosts if pinned is None or host.name == pinned]
        try:
            return schedule(demand, self._candidates(conn, demand, considered, capacities),
                            self._policy)
        except NoHostFits as none:
            raise errors.InsufficientCapacity(
                resource=none.resource, requested=requested(demand, none.resource),
                available=none.available, hosts=none.rejected) from None

    def availability(self, demand: Demand) -> tuple[int, str, list[HostAvailability]]:
        """(VMs of demand that fit now on all hosts, what limits them, the count per host)."""
        hosts = [host for host in self._hosts.all() if host.row.enabled]
        capacities = self.known(hosts)
        with self._db.read() as conn:
            candidates = self._candidates(conn, demand, hosts, capacities)
        per_host = []
        for candidate in candidates:
            if candidate.free is None:
                per_host.append(HostAvailability(candidate.name, 0, "host"))
                continue
            count, resource = limited_by(demand, candidate.free)
            per_host.append(HostAvailability(candidate.name, count, resource))
        if not per_host:
            return 0, "host", []
        best = max(per_host, key=lambda entry: (entry.available, entry.host))
        return sum(entry.available for entry in per_host), best.limited_by, per_host

    @staticmethod
    def _candidates(conn: sqlite3.Connection, demand: Demand, hosts: list[Host],
                    capacities: dict[str, HostCapacity]) -> list[Candidate]:
        held = host_dao.usage(conn)
        # Free GPUs even for a VM without any: the scheduler keeps GPU hosts for GPU work.
        gpus = gpu_dao.list_free(conn, demand.gpu_model if demand.gpu_count else None)
        candidates = []
        for host in hosts:
            capacity = capacities.get(host.name)
            free = None if capacity is None else _free(capacity, held.get(host.name),
                                                       gpus.get(host.name, []))
            candidates.append(Candidate(host.name, host.row.enabled, capacity is not None, free))
        return candidates


def _free(capacity: HostCapacity, held: host_dao.Usage | None,
          gpus: list[gpu_dao.GpuRow]) -> Free:
    held = held or host_dao.Usage()
    # Without pinned CPUs the cells are shared as they are (nothing changes a Free's lists):
    # copying 1,024 CPUs of each of 1,000 hosts cost a create some 30 ms.
    cpus = capacity.cells if not held.pinned_cpus else {
        node: [cpu for cpu in cpus if cpu not in held.pinned_cpus]
        for node, cpus in capacity.cells.items()}
    return Free(vcpus=capacity.vcpus - held.vcpus, ram_mib=capacity.ram_mib - held.ram_mib,
                disk_gb=capacity.disk_gb - held.disk_gb - held.volumes_gb, gpus=gpus, cpus=cpus)


def _even_cells(cpus: int, nodes: int) -> dict[int, list[int]]:
    """CPUs split evenly over nodes, for drivers that report a node count but no cells."""
    return {node: list(range(node * cpus // nodes, (node + 1) * cpus // nodes))
            for node in range(nodes)}
