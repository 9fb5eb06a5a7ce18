"""Placement: does a VM fit on this host now, and which GPUs, NUMA node and host CPUs it gets.

Capacity is the host's CPUs and memory (libvirt getInfo) and the instances filesystem's size,
times the allocation ratios, minus what VM rows hold. Claims run inside the caller's BEGIN IMMEDIATE transaction, so two creates
can never both take the last GPU or vCPU.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from src import errors
from src.database import gpus as gpu_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.driver import Hypervisor
from src.vocabulary import CAPACITY_RESOURCES as RESOURCE_ORDER  # scarcest kind first

UNBOUNDED = 2 ** 62


@dataclass(frozen=True)
class Demand:
    cpu: int
    ram: int
    gpu_count: int = 0
    gpu_model: str | None = None
    numa_aligned: bool = False
    cpu_pinning: bool = False
    disk_gb: int = 0


@dataclass(frozen=True)
class Claim:
    gpus: list[gpu_dao.GpuRow] = field(default_factory=list)
    numa_node: int | None = None
    node_cpus: list[int] = field(default_factory=list)  # the host CPUs of numa_node
    pinned_cpus: list[int] = field(default_factory=list)  # one host CPU per vCPU, in order


@dataclass(frozen=True)
class HostCapacity:
    vcpus: int  # logical CPUs times the CPU allocation ratio
    ram_mib: int  # memory times the RAM allocation ratio
    cells: dict[int, list[int]]  # host CPU ids per NUMA node
    disk_gb: int = UNBOUNDED  # the instances filesystem times the disk allocation ratio


@dataclass(frozen=True)
class Free:
    """What is left for the next VM, as choose sees it."""

    vcpus: int
    ram_mib: int
    gpus: list[gpu_dao.GpuRow]
    cpus: dict[int, list[int]]  # unpinned host CPUs per NUMA node
    disk_gb: int = UNBOUNDED


class Shortfall(Exception):
    def __init__(self, resource: str, available: int) -> None:
        super().__init__(resource)
        self.resource = resource
        self.available = available


def choose(demand: Demand, free: Free, skip: frozenset[str] = frozenset()) -> Claim:
    """The claim for demand out of free, packing GPU VMs onto the fullest node that fits.

    Raises: Shortfall naming the first resource that does not fit (skip ignores some).
    """
    if "vcpu" not in skip and demand.cpu > free.vcpus:
        raise Shortfall("vcpu", max(0, free.vcpus))
    if "ram" not in skip and demand.ram > free.ram_mib:
        raise Shortfall("ram", max(0, free.ram_mib))
    if "disk" not in skip and demand.disk_gb > free.disk_gb:
        raise Shortfall("disk", max(0, free.disk_gb))
    if not (demand.gpu_count or demand.numa_aligned or demand.cpu_pinning):
        return Claim()
    nodes: list[int | None] = list(free.cpus) if demand.numa_aligned else [None]
    fits: list[tuple[int, int, int | None, list[gpu_dao.GpuRow], list[int]]] = []
    best_gpus = best_cpus = 0
    for node in nodes:
        # A GPU whose NUMA node is unknown is local to none and so acceptable to every node.
        gpus = [gpu for gpu in free.gpus
                if node is None or gpu.numa_node is None or gpu.numa_node == node]
        cpus = (free.cpus[node] if node is not None
                else sorted(cpu for cpus in free.cpus.values() for cpu in cpus))
        best_gpus, best_cpus = max(best_gpus, len(gpus)), max(best_cpus, len(cpus))
        gpu_ok = "gpu" in skip or len(gpus) >= demand.gpu_count
        cpu_ok = "pcpu" in skip or not demand.cpu_pinning or len(cpus) >= demand.cpu
        if gpu_ok and cpu_ok:
            fits.append((len(gpus), len(cpus), node, gpus, cpus))
    if not fits:
        if "gpu" not in skip and best_gpus < demand.gpu_count:
            raise Shortfall("gpu", best_gpus)
        raise Shortfall("pcpu", best_cpus)
    _, _, node, gpus, cpus = min(fits, key=lambda fit: (fit[0], fit[1], fit[2] or 0))
    return Claim(gpus=gpus[:demand.gpu_count], numa_node=node,
                 node_cpus=free.cpus[node] if node is not None else [],
                 pinned_cpus=cpus[:demand.cpu] if demand.cpu_pinning else [])


def after_claim(free: Free, demand: Demand, claim: Claim) -> Free:
    taken_gpus = {gpu.id for gpu in claim.gpus}
    taken_cpus = set(claim.pinned_cpus)
    return Free(vcpus=free.vcpus - demand.cpu, ram_mib=free.ram_mib - demand.ram,
                disk_gb=free.disk_gb - demand.disk_gb, gpus=[gpu for gpu in free.gpus if gpu.id not in taken_gpus],
                 cpus={node: [cpu for cpu in cpus if cpu not in taken_cpus]
                       for node, cpus in free.cpus.items()})


def count_fits(demand: Demand, free: Free, skip: frozenset[str] = frozenset()) -> int:
    """How many VMs of demand fit into free.

    vCPUs and RAM are plain division; only GPUs and pinned CPUs, which depend on which node
    each claim lands on, are counted one claim after another (at most up to that bound).
    """
    limits = [free.vcpus // demand.cpu] if "vcpu" not in skip else []
    limits += [free.ram_mib // demand.ram] if "ram" not in skip else []
    limits += [free.disk_gb // demand.disk_gb] if "disk" not in skip and demand.disk_gb else []
    bound = max(0, min(limits)) if limits else None
    placed = ((demand.gpu_count and "gpu" not in skip)
              or (demand.cpu_pinning and "pcpu" not in skip))
    if not placed and bound is not None:
        return bound
    fitted = 0
    while bound is None or fitted < bound:
        try:
            claim = choose(demand, free, skip)
        except Shortfall:
            break
        fitted += 1
        free = after_claim(free, demand, claim)
    return fitted


class Placement:
    def __init__(self, db: Database, hypervisor: Hypervisor, cpu_ratio: float,
                 ram_ratio: float, disk_gb: Callable[[], int] = lambda: UNBOUNDED) -> None:
        self._db = db
        self._hypervisor = hypervisor
        self._cpu_ratio = cpu_ratio
        self._ram_ratio = ram_ratio
        self._disk_gb = disk_gb  # the instances filesystem's size, ratio applied
        self._host: HostCapacity | None = None
        self._lock = threading.Lock()

    def host(self) -> HostCapacity:
        """The host's capacity, read from libvirt once (and again after forget_host).

        Raises: HypervisorError.
        """
        with self._lock:
            if self._host is None:
                cpus, ram_mib, nodes = self._hypervisor.host.resources()
                cells = self._hypervisor.host.numa_cpus() or _even_cells(cpus, nodes)
                self._host = HostCapacity(vcpus=int(cpus * self._cpu_ratio),
                                          ram_mib=int(ram_mib * self._ram_ratio), cells=cells,
                                          disk_gb=self._disk_gb())
            return self._host

    def forget_host(self) -> None:
        with self._lock:
            self._host = None

    def claim(self, conn: sqlite3.Connection, demand: Demand, host: HostCapacity) -> Claim:
        """Pick what demand gets, inside the caller's write transaction.

        Raises: InsufficientCapacity with the resource that ran out.
        """
        try:
            return choose(demand, self._free(conn, demand, host))
        except Shortfall as short:
            requested = {"gpu": demand.gpu_count, "ram": demand.ram,
                         "disk": demand.disk_gb}.get(short.resource, demand.cpu)
            raise errors.InsufficientCapacity(resource=short.resource, available=short.available,
                                              requested=requested) from None

    def availability(self, demand: Demand) -> tuple[int, str]:
        """(how many VMs of demand fit now, the resource that limits them). Raises: HypervisorError."""
        host = self.host()
        with self._db.read() as conn:
            free = self._free(conn, demand, host)
        counts = {}
        for resource in RESOURCE_ORDER:
            others = frozenset(RESOURCE_ORDER) - {resource}
            if resource == "gpu" and not demand.gpu_count:
                continue
            if resource == "pcpu" and not demand.cpu_pinning:
                continue
            if resource == "disk" and not demand.disk_gb:
                continue
            counts[resource] = count_fits(demand, free, others)
        limited_by = min(counts, key=lambda resource: counts[resource])
        return min(count_fits(demand, free), counts[limited_by]), limited_by

    @staticmethod
    def _free(conn: sqlite3.Connection, demand: Demand, host: HostCapacity) -> Free:
        held = vm_dao.allocated(conn)
        pinned = held.pinned_cpus
        gpus = gpu_dao.list_free(conn, demand.gpu_model) if demand.gpu_count else []
        return Free(vcpus=host.vcpus - held.vcpus, ram_mib=host.ram_mib - held.ram_mib,
                    disk_gb=host.disk_gb - held.disk_gb, gpus=gpus,
                     cpus={node: [cpu for cpu in cpus if cpu not in pinned]
                           for node, cpus in host.cells.items()})


def _even_cells(cpus: int, nodes: int) -> dict[int, list[int]]:
    """CPUs split evenly over nodes, for drivers that report a node count but no cells."""
    return {node: list(range(node * cpus // nodes, (node + 1) * cpus // nodes))
            for node in range(nodes)}
