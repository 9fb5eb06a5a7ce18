"""What each host has and has free: its CPUs, memory, NUMA cells and disk (read from libvirt,
cached), minus what its VMs and volumes hold (the usage counters kept with every claim and
release, src/database/hosts.py). Claims run inside the caller's BEGIN IMMEDIATE transaction,
so two creates can never both take the last GPU or vCPU of a host."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from src import errors
from src.database import gpus as gpu_dao
from src.database import hosts as host_dao
from src.database import partitions as partition_dao
from src.database import reservations as reservation_dao
from src.database import vm_evacuations as evac_dao
from src.database import vm_migrations as move_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.services.hosts.registry import Host, HostRegistry
from src.services.rules.placement import (
    Claim,
    Demand,
    Free,
    HostCapacity,
    PartitionRoom,
    limited_by,
)
from src.services.rules.scheduler import Candidate, NoHostFits, requested, schedule
from src.utils.clock import utc_now
from src.vocabulary import VF_TYPE

GIB = 1024 ** 3
CAPACITY_CALLS = 1  # what a sweep's reread of a shared host's capacity costs (getInfo)


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
        self._sizes: dict[str, tuple[int, int, int]] = {}  # getInfo's, for each reading
        self._lock = threading.Lock()

    def of(self, host: Host) -> HostCapacity:
        """A host's capacity, read from libvirt once (and again after forget or reread).

        Raises: HypervisorError.
        """
        with self._lock:
            cached = self._cache.get(host.name)
        if cached is not None:
            return cached
        size = host.hypervisor.host.resources()
        capacity = self._measure(host, size, None)
        with self._lock:
            self._cache[host.name], self._sizes[host.name] = capacity, size
        return capacity

    def reread(self, host: Host) -> None:
        """Read the host's capacity again now (each sweep's GPU refresh does), so creates go
        on with the last reading meanwhile instead of each reading the hosts forgotten since
        (a thousand hosts' sweeps forgot 33 a second). One call (CAPACITY_CALLS): the NUMA
        cells are read again only when the CPUs or nodes changed. A host that does not answer
        is forgotten: the next create asks it again."""
        with self._lock:
            cached, size_before = self._cache.get(host.name), self._sizes.get(host.name)
        try:
            size = host.hypervisor.host.resources()
            same = cached is not None and size_before is not None and size[::2] == size_before[::2]
            capacity = self._measure(host, size, cached.cells if same and cached else None)
        except HypervisorError:
            self.forget(host.name)
            return
        with self._lock:
            self._cache[host.name], self._sizes[host.name] = capacity, size

    def _measure(self, host: Host, size: tuple[int, int, int],
                 cells: dict[int, list[int]] | None) -> HostCapacity:
        """The capacity of host of size (CPUs, MiB, nodes); its cells read unless given.

        Raises: HypervisorError.
        """
        cpus, ram_mib, nodes = size
        if cells is None:
            cells = host.hypervisor.host.numa_cpus() or _even_cells(cpus, nodes)
        row = host.row
        disk_bytes = (host.hypervisor.pools.capacity_bytes(row.storage_pool)
                      if row.storage == "pool" else None)
        return HostCapacity(
            vcpus=int(cpus * row.cpu_allocation_ratio),
            ram_mib=int(ram_mib * row.ram_allocation_ratio), cells=cells,
            disk_gb=self._shared_disk_gb() if disk_bytes is None else disk_bytes // GIB)

    def forget(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._cache.clear()
                self._sizes.clear()
            else:
                self._cache.pop(name, None)
                self._sizes.pop(name, None)

    def known(self, hosts: list[Host]) -> dict[str, HostCapacity]:
        """The capacity of every host that is up and answers; others are left out."""
        up = self._hosts.answering([host.name for host in hosts])
        with self._lock:
            cached = dict(self._cache)
        found = {}
        for host in hosts:
            if host.name not in up:
                continue
            capacity = cached.get(host.name)
            if capacity is None:
                try:
                    capacity = self.of(host)
                except HypervisorError:
                    continue
            found[host.name] = capacity
        return found

    @property
    def policy(self) -> str:
        """IAAS_SCHEDULER: how the scheduler weighs the hosts that fit."""
        return self._policy

    def claim(self, conn: sqlite3.Connection, demand: Demand, hosts: list[Host],
              capacities: dict[str, HostCapacity], pinned: str | None = None,
              kept: frozenset[str] = frozenset(),
              reservation: str | None = None) -> tuple[str, Claim]:
        """(host, claim) for demand, inside the caller's write transaction; kept: hosts held
        for a VM that waited past the backfill limit (src/services/hosts/backfill.py);
        reservation: the VM runs in it, on the GPUs it claims now and no others.

        Raises: InsufficientCapacity naming the closest miss and the hosts each filter rejected.
        """
        considered = [host for host in hosts
                      if (pinned is None or host.name == pinned) and host.name not in kept]
        try:
            return schedule(demand, self._each_candidate(conn, demand, considered, capacities,
                                                         reservation), self._policy)
        except NoHostFits as none:
            short = errors.InsufficientCapacity(
                resource=none.resource, requested=requested(demand, none.resource),
                available=none.available, hosts=none.rejected)
            if demand.gpu_profile and none.resource == "gpu":
                short = errors.InsufficientCapacity(
                    f"{short.message[:-1]}: {_no_partition(demand.gpu_profile)}.",
                    **short.details)
            raise short from None

    def availability(self, demand: Demand,
                     at: str | None = None) -> tuple[int, str, list[HostAvailability]]:
        """(VMs of demand that fit on all hosts now, or at a later moment, what limits them,
        the count per host). At a later moment, what VMs hold now is taken as still held and
        GPUs claimed by a reservation then are counted out."""
        hosts = [host for host in self._hosts.all() if host.row.enabled]
        capacities = self.known(hosts)
        with self._db.read() as conn:
            candidates = self._candidates(conn, demand, hosts, capacities, at=at)
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

    def rooms(self, conn: sqlite3.Connection, hosts: list[Host],
              capacities: dict[str, HostCapacity]) -> list[Candidate]:
        """What is free on each host now, every free GPU included (whatever its model)."""
        return self._candidates(conn, Demand(cpu=0, ram=0, gpu_count=1), hosts, capacities,
                                with_partitions=True)

    @staticmethod
    def whole_rooms(conn: sqlite3.Connection, hosts: list[Host],
                    capacities: dict[str, HostCapacity]) -> dict[str, Free]:
        """Each host that answers as if nothing ran on it: all it has, every assignable GPU,
        every partition its GPUs offer."""
        gpus: dict[str, list[gpu_dao.GpuRow]] = {}
        for gpu in gpu_dao.assignable_rows(conn):
            gpus.setdefault(gpu.host, []).append(gpu)
        rooms: dict[str, list[PartitionRoom]] = {}
        for offer in partition_dao.list_all(conn):  # (a partition demand may wait for one)
            rooms.setdefault(offer.host, []).append(PartitionRoom(
                offer.parent, offer.type_id, offer.name,
                len(offer.functions) if offer.kind == "vf" else offer.total,
                functions=offer.functions))
        return {host.name: Free(vcpus=capacity.vcpus, ram_mib=capacity.ram_mib,
                                disk_gb=capacity.disk_gb, gpus=gpus.get(host.name, []),
                                cpus=capacity.cells, partitions=tuple(rooms.get(host.name, ())))
                for host in hosts if (capacity := capacities.get(host.name)) is not None}

    @staticmethod
    def _candidates(conn: sqlite3.Connection, demand: Demand, hosts: list[Host],
                    capacities: dict[str, HostCapacity], reservation: str | None = None,
                    at: str | None = None, with_partitions: bool = False) -> list[Candidate]:
        return list(Capacity._each_candidate(conn, demand, hosts, capacities, reservation, at,
                                             with_partitions))

    @staticmethod
    def _each_candidate(conn: sqlite3.Connection, demand: Demand, hosts: list[Host],
                        capacities: dict[str, HostCapacity], reservation: str | None = None,
                        at: str | None = None, with_partitions: bool = False
                        ) -> Iterator[Candidate]:
        """Each host as the scheduler sees it, made as it is asked for (what the database says
        is read before the first)."""
        usage = host_dao.usage(conn)  # the counters (migration 017): one row per host
        held = evac_dao.with_evacuations(conn, move_dao.with_moves(conn, {  # moves and
            # rebuilds under way claim their targets
            host: vm_dao.Held(vcpus=used.vcpus, ram_mib=used.ram_mib, disk_gb=used.disk_gb,
                              pinned_cpus=set(used.pinned_cpus))
            for host, used in usage.items()}))
        volumes_gb = {host: used.volumes_gb for host, used in usage.items()}
        # Free GPUs even for a VM without any: the scheduler keeps GPU hosts for GPU work.
        moment = at or utc_now()
        gpus, later = claimed_out(conn, gpu_dao.list_free(
            conn, demand.gpu_model if demand.gpu_count else None), reservation, moment)
        # Never whole-GPU passthrough and partitions on one physical GPU.
        split = partition_dao.gpus_split(conn)
        gpus = {host: [gpu for gpu in free if (host, gpu.id) not in split]
                for host, free in gpus.items()}
        rooms = partition_rooms(conn, moment) if demand.gpu_profile or with_partitions else {}
        return _each(hosts, capacities, held, gpus, volumes_gb, later, rooms)


def _each(hosts: list[Host], capacities: dict[str, HostCapacity], held: dict[str, vm_dao.Held],
          gpus: dict[str, list[gpu_dao.GpuRow]], volumes_gb: dict[str, int],
          later: dict[str, frozenset[str]],
          rooms: dict[str, tuple[PartitionRoom, ...]]) -> Iterator[Candidate]:
    for host in hosts:
        name = host.name
        capacity = capacities.get(name)
        free = None if capacity is None else _free(capacity, held.get(name),
                                                   gpus.get(name, []),
                                                   volumes_gb.get(name, 0),
                                                   later.get(name, frozenset()),
                                                   rooms.get(name, ()))
        yield Candidate(name, host.row.enabled, capacity is not None, free)


def claimed_out(conn: sqlite3.Connection, free: dict[str, list[gpu_dao.GpuRow]],
                reservation: str | None, at: str
                ) -> tuple[dict[str, list[gpu_dao.GpuRow]], dict[str, frozenset[str]]]:
    """The free GPUs a VM may take at `at` (by host), and those of them a reservation claims
    later (by host: a VM there will be preempted, so the scheduler takes them last).

    In a reservation, a VM takes only what the reservation claims at `at`; any other VM never
    takes a GPU some reservation claims at `at`.
    """
    now_claimed = reservation_dao.claimed_at(conn, at)
    later: dict[str, set[str]] = {}
    for host, gpu in reservation_dao.claimed_after(conn, at, reservation):
        later.setdefault(host, set()).add(gpu)
    kept = {host: [gpu for gpu in gpus
                   if now_claimed.get((host, gpu.id)) == reservation]
            for host, gpus in free.items()}
    return kept, {host: frozenset(ids) for host, ids in later.items()}


def partition_rooms(conn: sqlite3.Connection, at: str) -> dict[str, tuple[PartitionRoom, ...]]:
    """By host, the partitions that may be made at `at`: on GPUs no VM holds whole and no
    reservation claims then or later, of the one type each GPU already holds partitions of
    (any type on a GPU that holds none); a GPU's virtual functions count as one type, the VFs
    no VM holds listed by address."""
    offers = partition_dao.list_all(conn)
    if not offers:  # no GPU here is split: nothing to weigh (the common case)
        return {}
    whole = {(gpu.host, gpu.id) for gpu in gpu_dao.list_all(conn)
             if gpu.vm_id is not None or gpu.unavailable_reason == "not_present"}
    # Nor on GPUs a later window claims: a VM on a partition is not preempted at its start.
    claimed = set(reservation_dao.claimed_at(conn, at)) | reservation_dao.claimed_after(
        conn, at, None)
    # A VF is one device: passed through whole, or holding mdevs of a type it offers.
    through: set[tuple[str, str]] = set()
    taken_vfs: set[tuple[str, str]] = set()
    physical = partition_dao.physical_functions(offers)
    if physical:
        through = partition_dao.vfs_taken(conn)
        taken_vfs = through | partition_dao.parents_in_use(conn)
    held_types: dict[tuple[str, str], set[str]] = {}
    for offer in offers:
        if offer.used:
            held_types.setdefault((offer.host, offer.parent), set()).add(offer.type_id)
    rooms: dict[str, list[PartitionRoom]] = {}
    for offer in offers:
        gpu = (offer.host, offer.parent)
        card = physical.get(gpu, gpu)  # an mdev type of a VF lives on its physical function
        if card in whole or card in claimed or gpu in through or offer.type_id not in (
                held_types.get(gpu, {offer.type_id})):
            continue
        rooms.setdefault(offer.host, []).append(_room(offer, taken_vfs))
    return {host: tuple(found) for host, found in rooms.items()}


def _room(offer: partition_dao.PartitionRow, taken_vfs: set[tuple[str, str]]) -> PartitionRoom:
    """The room an offer leaves: a VF offer as many as its VFs no VM holds (an offer read
    before its addresses were kept, migration 028, has none until the next refresh)."""
    if offer.kind != "vf":
        return PartitionRoom(offer.parent, offer.type_id, offer.name,
                             max(0, offer.total - offer.used), offer.used)
    free = tuple(vf for vf in offer.functions if (offer.host, vf) not in taken_vfs)
    return PartitionRoom(offer.parent, offer.type_id, offer.name, len(free), offer.used, free)


def _no_partition(profile: str) -> str:
    """Why a partition demand fits nowhere, in words an operator can act on."""
    what = f"no host has a free GPU partition of profile {profile!r}"
    if profile.lower() == VF_TYPE:
        return (f"{what} (an SR-IOV virtual function of a GPU no VM holds whole; GET /v1/gpus "
                f"lists the partitions of kind vf)")
    return f"{what} (GET /v1/gpus lists the partitions each GPU offers)"


def _free(capacity: HostCapacity, held: vm_dao.Held | None, gpus: list[gpu_dao.GpuRow],
          volumes_gb: int, claimed_later: frozenset[str] = frozenset(),
          partitions: tuple[PartitionRoom, ...] = ()) -> Free:
    held = held or vm_dao.Held(vcpus=0, ram_mib=0, disk_gb=0, pinned_cpus=set())
    # Without pinned CPUs the cells are shared as they are (placement only reads a Free's
    # lists): copying 1,024 CPUs of each of 1,000 hosts cost a create some 30 ms.
    cpus = capacity.cells if not held.pinned_cpus else {
        node: [cpu for cpu in cpus if cpu not in held.pinned_cpus]
        for node, cpus in capacity.cells.items()}
    return Free(vcpus=capacity.vcpus - held.vcpus, ram_mib=capacity.ram_mib - held.ram_mib,
                disk_gb=capacity.disk_gb - held.disk_gb - volumes_gb, gpus=gpus,
                claimed_later=claimed_later, partitions=partitions, cpus=cpus)


def _even_cells(cpus: int, nodes: int) -> dict[int, list[int]]:
    """CPUs split evenly over nodes, for drivers that report a node count but no cells."""
    return {node: list(range(node * cpus // nodes, (node + 1) * cpus // nodes))
            for node in range(nodes)}
