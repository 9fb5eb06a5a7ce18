"""The capacity queue's fair order: the project that holds the smallest share of what it waits
for goes first, then the oldest of its VMs; a project's share grows as its VMs are placed.

A share is what the project holds of a resource over what its quota allows of it (the whole
cluster's amount when its quota sets no limit). A VM that asks for GPUs, whole or a partition
(which counts as one GPU, as in the quota), is judged by the GPU share, whatever ran short; any
other by the share of the resource its placement found short.
Pure: the caller says who holds what.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from operator import attrgetter
from typing import NamedTuple

from src.services.rules.placement import Demand, Free, Shortfall, choose

# The quota resource a shortfall's share is counted in (a host that does not answer: vCPUs).
SHARE_OF = {"gpu": "gpus", "pcpu": "vcpus", "vcpu": "vcpus", "ram": "ram", "disk": "disk_gb",
            "host": "vcpus"}


class Entry(NamedTuple):
    """A waiting VM as the order sees it (a named tuple: a pass makes one for each of a
    thousand waits, and a frozen dataclass's per-field setattr cost it a millisecond)."""

    key: str  # the VM's id
    project: str
    since: str  # when it was asked for (RFC 3339: sorts as time)
    resource: str  # the quota resource its share is counted in
    amount: int  # what placing it adds to its project's holding of that resource


def share_resource(demand: Demand, reason: str) -> str:
    """The quota resource a waiting VM's fairness is judged by."""
    return "gpus" if gpus_of(demand) else SHARE_OF.get(reason, "vcpus")


def gpus_of(demand: Demand) -> int:
    """The GPUs a VM of demand counts for: a partition is one, as in the gpus quota."""
    return demand.gpu_count or int(demand.gpu_profile is not None)


def amount_of(demand: Demand, resource: str) -> int:
    return {"gpus": gpus_of(demand), "vcpus": demand.cpu, "ram": demand.ram,
            "disk_gb": demand.disk_gb}.get(resource, 1)


Holdings = dict[tuple[str, str], int]  # (project, resource) -> amount
_AGE = attrgetter("since", "key")  # the oldest first, ties by VM id


class FairTurn:
    """The waiting VMs one at a time in fair order. After each next(), the caller says whether
    it was placed (its project's share grows) or passed (it stays where it was, and the
    project's next VM comes up in its turn)."""

    def __init__(self, entries: Iterable[Entry], held: Holdings, allowed: Holdings) -> None:
        """held: what each project holds now; allowed: its quota, or the cluster's amount."""
        self._held = dict(held)
        self._allowed = allowed
        self._queues: dict[str, deque[Entry]] = {}
        for entry in sorted(entries, key=_AGE):
            self._queues.setdefault(entry.project, deque()).append(entry)
        self._heap = [self._turn(project) for project in self._queues]
        heapq.heapify(self._heap)
        self._current: Entry | None = None

    @property
    def held(self) -> Holdings:
        """What each project holds now, with what was placed since the start."""
        return dict(self._held)

    def share(self, project: str, resource: str) -> float:
        allowed = max(1, self._allowed.get((project, resource), 1))
        return self._held.get((project, resource), 0) / allowed

    def next(self) -> Entry | None:
        """The next VM to try, or None when every one has had its turn."""
        assert self._current is None, "say placed() or passed() first"
        if not self._heap:
            return None
        _, _, project = heapq.heappop(self._heap)
        self._current = self._queues[project][0]
        return self._current

    def placed(self) -> None:
        entry = self._take()
        key = (entry.project, entry.resource)
        self._held[key] = self._held.get(key, 0) + entry.amount
        self._requeue(entry.project)

    def passed(self) -> None:
        self._requeue(self._take().project)

    def _take(self) -> Entry:
        assert self._current is not None
        entry, self._current = self._current, None
        self._queues[entry.project].popleft()
        return entry

    def _requeue(self, project: str) -> None:
        if self._queues[project]:
            heapq.heappush(self._heap, self._turn(project))

    def _turn(self, project: str) -> tuple[float, str, str]:
        head = self._queues[project][0]
        return self.share(project, head.resource), head.since, project


def fair_order(entries: Iterable[Entry], held: Holdings, allowed: Holdings) -> list[Entry]:
    """Every waiting VM in the order they would be placed if each one fitted in its turn: a
    FairTurn where each is placed, written out (a pass ranks a thousand: the calls added up)."""
    holding = dict(held)
    queues: dict[str, deque[Entry]] = {}
    for entry in sorted(entries, key=_AGE):
        queues.setdefault(entry.project, deque()).append(entry)

    def turn(project: str, head: Entry) -> tuple[float, str, str]:
        key = (project, head.resource)
        return holding.get(key, 0) / max(1, allowed.get(key, 1)), head.since, project

    heap = [turn(project, queue[0]) for project, queue in queues.items()]
    heapq.heapify(heap)
    order = []
    while heap:
        project = heap[0][2]
        queue = queues[project]
        entry = queue.popleft()
        order.append(entry)
        key = (project, entry.resource)
        holding[key] = holding.get(key, 0) + entry.amount
        if queue:  # turn(project, queue[0]) written out: a call per entry added up
            head = queue[0]
            key = (project, head.resource)
            heapq.heapreplace(heap, (holding.get(key, 0) / max(1, allowed.get(key, 1)),
                                     head.since, project))
        else:
            heapq.heappop(heap)
    return order


def could_hold(demand: Demand, empty: dict[str, Free]) -> set[str]:
    """The hosts that would take demand if nothing ran on them (empty: each host's whole room)."""
    fits = set()
    for host, room in empty.items():
        try:
            choose(demand, room)
        except Shortfall:
            continue
        fits.add(host)
    return fits
