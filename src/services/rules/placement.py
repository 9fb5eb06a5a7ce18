"""Placement on one host: does a VM fit into what is free there, and which GPUs, NUMA node and
host CPUs it gets. Pure functions; services/hosts/capacity.py says what is free on each host."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from src.database import gpus as gpu_dao
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
    gpu_profile: str | None = None  # one GPU partition: an mdev type (id or name), or sriov_vf


@dataclass(frozen=True)
class PartitionRoom:
    """Room for partitions of one type (an mdev type, or sriov_vf) on one GPU: free ones, and
    how many of the type VMs already hold there (a GPU holds partitions of one type at a time)."""

    parent: str  # the GPU's PCI address
    type_id: str
    name: str | None
    free: int
    used: int = 0
    functions: tuple[str, ...] = ()  # the free VFs' PCI addresses (a VF room), first taken first

    @property
    def next_vf(self) -> str | None:
        """The VF a claim of this room takes (None for an mdev type)."""
        return self.functions[0] if self.functions else None

    def offers(self, profile: str) -> bool:
        return profile.lower() in (self.type_id.lower(), (self.name or "").lower())


@dataclass(frozen=True)
class Claim:
    gpus: list[gpu_dao.GpuRow] = field(default_factory=list)
    partition: PartitionRoom | None = None  # the GPU and type a partition is made of
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
    claimed_later: frozenset[str] = frozenset()  # GPUs a reservation claims later: taken last
    # Partitions that may be made now: on GPUs nobody holds whole, of the type each holds.
    partitions: tuple[PartitionRoom, ...] = ()


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
    partition = None
    if demand.gpu_profile and "gpu" not in skip:
        partition = _partition(demand.gpu_profile, free)
    if not (demand.gpu_count or demand.numa_aligned or demand.cpu_pinning):
        return Claim(partition=partition)
    nodes: list[int | None] = list(free.cpus) if demand.numa_aligned else [None]
    fits: list[tuple[int, int, int | None, list[gpu_dao.GpuRow], list[int]]] = []
    best_gpus = best_cpus = 0
    for node in nodes:
        # A GPU whose NUMA node is unknown is local to none and so acceptable to every node.
        gpus = [gpu for gpu in free.gpus
                if node is None or gpu.numa_node is None or gpu.numa_node == node]
        if node is not None:
            cpus = free.cpus[node]
        elif demand.cpu_pinning:
            cpus = sorted(cpu for cpus in free.cpus.values() for cpu in cpus)
        else:  # none pinned, so only counted (a queue pass sorted each host's CPUs twice)
            cpus = []
        cpu_count = (len(cpus) if node is not None or demand.cpu_pinning
                     else sum(map(len, free.cpus.values())))
        best_gpus, best_cpus = max(best_gpus, len(gpus)), max(best_cpus, cpu_count)
        gpu_ok = "gpu" in skip or len(gpus) >= demand.gpu_count
        cpu_ok = "pcpu" in skip or not demand.cpu_pinning or cpu_count >= demand.cpu
        if gpu_ok and cpu_ok:
            fits.append((len(gpus), cpu_count, node, gpus, cpus))
    if not fits:
        if "gpu" not in skip and best_gpus < demand.gpu_count:
            raise Shortfall("gpu", best_gpus)
        raise Shortfall("pcpu", best_cpus)
    _, _, node, gpus, cpus = min(fits, key=lambda fit: (fit[0], fit[1], fit[2] or 0))
    # A GPU no reservation claims first: a VM on a claimed one is preempted at the claim's start.
    gpus = sorted(gpus, key=lambda gpu: gpu.id in free.claimed_later)
    return Claim(gpus=gpus[:demand.gpu_count], partition=partition, numa_node=node,
                 node_cpus=free.cpus[node] if node is not None else [],
                 pinned_cpus=cpus[:demand.cpu] if demand.cpu_pinning else [])


def _partition(profile: str, free: Free) -> PartitionRoom:
    """The GPU a partition of profile is made on: the one that holds most of the type already
    (partitions pack, leaving whole GPUs whole). Raises: Shortfall (gpu)."""
    rooms = [room for room in free.partitions if room.free > 0 and room.offers(profile)]
    if not rooms:
        raise Shortfall("gpu", 0)
    return min(rooms, key=lambda room: (-room.used, room.parent, room.type_id))


def _after_partition(rooms: tuple[PartitionRoom, ...],
                     taken: PartitionRoom | None) -> tuple[PartitionRoom, ...]:
    """The rooms once taken is made: one fewer of its type there, and no other type on its
    GPU (a GPU holds one type at a time)."""
    if taken is None:
        return rooms
    return tuple(
        replace(room, free=room.free - 1, used=room.used + 1, functions=room.functions[1:])
        if room == taken else room
        for room in rooms if room.parent != taken.parent or room.type_id == taken.type_id)


def after_claim(free: Free, demand: Demand, claim: Claim) -> Free:
    taken_gpus = {gpu.id for gpu in claim.gpus}
    taken_cpus = set(claim.pinned_cpus)
    return Free(vcpus=free.vcpus - demand.cpu, ram_mib=free.ram_mib - demand.ram,
                disk_gb=free.disk_gb - demand.disk_gb, gpus=[gpu for gpu in free.gpus if gpu.id not in taken_gpus],
                 cpus={node: [cpu for cpu in cpus if cpu not in taken_cpus]
                       for node, cpus in free.cpus.items()},
                claimed_later=free.claimed_later,
                partitions=_after_partition(free.partitions, claim.partition))


def count_fits(demand: Demand, free: Free, skip: frozenset[str] = frozenset()) -> int:
    """How many VMs of demand fit into free.

    vCPUs and RAM are plain division; only GPUs and pinned CPUs, which depend on which node
    each claim lands on, are counted one claim after another (at most up to that bound).
    """
    limits = [free.vcpus // demand.cpu] if "vcpu" not in skip else []
    limits += [free.ram_mib // demand.ram] if "ram" not in skip else []
    limits += [free.disk_gb // demand.disk_gb] if "disk" not in skip and demand.disk_gb else []
    bound = max(0, min(limits)) if limits else None
    placed = (((demand.gpu_count or demand.gpu_profile) and "gpu" not in skip)
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


def limited_by(demand: Demand, free: Free) -> tuple[int, str]:
    """(how many VMs of demand fit into free, the resource that runs out first)."""
    counts = {}
    for resource in RESOURCE_ORDER:
        if ((resource == "gpu" and not (demand.gpu_count or demand.gpu_profile))
                or (resource == "pcpu" and not demand.cpu_pinning)
                or (resource == "disk" and not demand.disk_gb)):
            continue
        counts[resource] = count_fits(demand, free, frozenset(RESOURCE_ORDER) - {resource})
    resource = min(counts, key=lambda name: counts[name])
    return min(count_fits(demand, free), counts[resource]), resource
