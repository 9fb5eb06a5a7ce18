"""Which host a VM goes to: filters, then weights. Pure: the caller says what each host has free.

Filters, in order: enabled, up, then what `placement.choose` finds short (vcpu, ram, disk, gpu,
pcpu: GPUs and pinned CPUs on one NUMA node for numa_aligned flavors). Each rejected host is
counted once, under the first filter that rejected it. Weights: `spread` puts a VM where most
RAM is free, `pack` where least RAM that fits is free; in both, a VM without GPUs goes to a host
without free GPUs when one fits, so GPU hosts stay free for GPU work. Ties break by name.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from src.services.rules.placement import Claim, Demand, Free, Shortfall, choose
from src.vocabulary import CAPACITY_RESOURCES

POLICIES = ("spread", "pack")
# How far a host got: a shortfall later in this order means it came closer to fitting.
_STAGES = ("enabled", "up", "vcpu", "ram", "disk", "gpu", "pcpu")


@dataclass(frozen=True)
class Candidate:
    name: str
    enabled: bool
    up: bool
    free: Free | None  # None when its capacity could not be read


class NoHostFits(Exception):
    """No host takes the demand: the closest miss, and how many hosts each filter rejected."""

    def __init__(self, resource: str, available: int, rejected: dict[str, int]) -> None:
        super().__init__(resource)
        self.resource = resource
        self.available = available
        self.rejected = rejected


def requested(demand: Demand, resource: str) -> int:
    """What demand asks of resource, in that resource's unit."""
    return {"gpu": demand.gpu_count or (1 if demand.gpu_profile else 0), "ram": demand.ram,
            "disk": demand.disk_gb}.get(resource, demand.cpu if resource in CAPACITY_RESOURCES
                                        else 1)


def schedule(demand: Demand, candidates: Iterable[Candidate],
             policy: str) -> tuple[str, Claim]:
    """(host name, claim) for demand. Raises: NoHostFits.

    Candidates are looked at one at a time and only the best fit so far is kept (the weight
    ends in the unique name, so the order they come in changes nothing): a create at 1,000
    hosts kept a thousand claims alive, and the garbage collector's full passes that followed
    cost it more than the weighing.
    """
    rejected: Counter[str] = Counter()
    closest: tuple[int, int, str] = (-1, 0, "up")  # (stage, available, resource)
    best: tuple[tuple[bool, bool, int, str], str, Claim] | None = None
    for candidate in candidates:
        if not candidate.enabled or not candidate.up or candidate.free is None:
            stage = "enabled" if not candidate.enabled else "up"
            rejected[stage] += 1
            closest = max(closest, (_STAGES.index(stage), 0, stage))
            continue
        try:
            claim = choose(demand, candidate.free)
        except Shortfall as short:
            rejected[short.resource] += 1
            closest = max(closest, (_STAGES.index(short.resource), short.available,
                                    short.resource))
            continue
        weight = _weight(demand, candidate, claim, policy)
        if best is None or weight < best[0]:
            best = (weight, candidate.name, claim)
    if best is None:
        raise NoHostFits(closest[2], closest[1], dict(rejected))
    return best[1], best[2]


def _weight(demand: Demand, candidate: Candidate, claim: Claim,
            policy: str) -> tuple[bool, bool, int, str]:
    free = candidate.free
    assert free is not None
    # GPUs a reservation claims later go last: preemption only when nothing else fits.
    preempted = any(gpu.id in free.claimed_later for gpu in claim.gpus)
    keeps_gpus_free = not (demand.gpu_count or demand.gpu_profile) and bool(free.gpus)
    ram = -free.ram_mib if policy == "spread" else free.ram_mib
    return preempted, keeps_gpus_free, ram, candidate.name
