"""The scheduler, pure: each filter rejects the hosts it should (each host counted once, under
the first filter that rejects it), the weights order what is left (spread, pack, GPU hosts kept
for GPU work), ties break by name, and NoHostFits names the closest miss."""
from __future__ import annotations

import pytest

from src.database.gpus import GpuRow
from src.services.rules.placement import Demand, Free
from src.services.rules.scheduler import (
    POLICIES,
    Candidate,
    NoHostFits,
    requested,
    schedule,
)

NOW = "2026-01-01T00:00:00.000000Z"


def gpu(address: str, numa_node: int | None = 0, host: str = "h") -> GpuRow:
    return GpuRow(id=address, vendor_id="0x10de", vendor_name=None, product_id="0x2330",
                  product_name="H100", iommu_group=None, numa_node=numa_node, driver=None,
                  unavailable_reason=None, refreshed_at=NOW, functions=[address], host=host)


def free(vcpus: int = 16, ram_mib: int = 65536, disk_gb: int = 1000,
         gpus: list[GpuRow] | None = None,
         cpus: dict[int, list[int]] | None = None) -> Free:
    return Free(vcpus=vcpus, ram_mib=ram_mib, disk_gb=disk_gb, gpus=gpus or [],
                cpus=cpus if cpus is not None else {0: list(range(8)), 1: list(range(8, 16))})


def host(name: str, *, enabled: bool = True, up: bool = True, vcpus: int = 16,
         ram_mib: int = 65536, disk_gb: int = 1000, gpus: list[GpuRow] | None = None,
         cpus: dict[int, list[int]] | None = None) -> Candidate:
    return Candidate(name, enabled, up, free(vcpus, ram_mib, disk_gb, gpus, cpus))


SMALL = Demand(cpu=2, ram=1024, disk_gb=10)


def refused(demand: Demand, candidates: list[Candidate],
            policy: str = "spread") -> NoHostFits:
    with pytest.raises(NoHostFits) as none:
        schedule(demand, candidates, policy)
    return none.value


# Filters -----------------------------------------------------------------------------------

def test_a_disabled_host_is_rejected_even_with_room() -> None:
    assert schedule(SMALL, [host("a", enabled=False), host("b")], "spread")[0] == "b"
    none = refused(SMALL, [host("a", enabled=False)])
    assert (none.resource, none.available, none.rejected) == ("enabled", 0, {"enabled": 1})


def test_a_host_that_is_down_or_unread_is_rejected() -> None:
    unread = Candidate("unread", True, True, None)  # its capacity could not be read
    none = refused(SMALL, [host("down", up=False), unread])
    assert (none.resource, none.available, none.rejected) == ("up", 0, {"up": 2})
    assert schedule(SMALL, [host("down", up=False), unread, host("z")], "pack")[0] == "z"


def test_a_host_disabled_and_down_counts_once_under_enabled() -> None:
    assert refused(SMALL, [host("a", enabled=False, up=False)]).rejected == {"enabled": 1}


@pytest.mark.parametrize(("left", "resource", "available"), [
    ({"vcpus": 1}, "vcpu", 1),
    ({"ram_mib": 512}, "ram", 512),
    ({"disk_gb": 9}, "disk", 9),
    ({"vcpus": -3}, "vcpu", 0),  # over-committed by a ratio change: nothing is available
])
def test_a_host_short_of_a_resource_is_rejected_under_it(left: dict[str, int], resource: str,
                                                         available: int) -> None:
    none = refused(SMALL, [host("a", **left)])  # type: ignore[arg-type]
    assert (none.resource, none.available, none.rejected) == (resource, available,
                                                              {resource: 1})


def test_a_host_short_of_several_is_counted_under_the_first_filter() -> None:
    none = refused(SMALL, [host("a", vcpus=1, ram_mib=1, disk_gb=1)])
    assert none.rejected == {"vcpu": 1} and none.resource == "vcpu"


def test_the_gpu_filter_counts_free_gpus_of_the_wanted_count() -> None:
    demand = Demand(cpu=2, ram=1024, gpu_count=2)
    none = refused(demand, [host("one", gpus=[gpu("0000:3b:00.0")]), host("none")])
    assert (none.resource, none.available, none.rejected) == ("gpu", 1, {"gpu": 2})
    chosen, claim = schedule(demand, [host("two", gpus=[gpu("0000:3b:00.0"),
                                                         gpu("0000:5e:00.0")])], "spread")
    assert (chosen, [g.id for g in claim.gpus]) == ("two", ["0000:3b:00.0", "0000:5e:00.0"])


def test_numa_alignment_wants_the_gpus_on_one_node() -> None:
    demand = Demand(cpu=2, ram=1024, gpu_count=2, numa_aligned=True)
    split = host("split", gpus=[gpu("0000:3b:00.0", 0), gpu("0000:86:00.0", 1)])
    none = refused(demand, [split])
    assert (none.resource, none.available, none.rejected) == ("gpu", 1, {"gpu": 1})
    local = host("local", gpus=[gpu("0000:86:00.0", 1), gpu("0000:af:00.0", 1)])
    chosen, claim = schedule(demand, [split, local], "spread")
    assert (chosen, claim.numa_node, claim.node_cpus) == ("local", 1, list(range(8, 16)))


def test_the_pcpu_filter_counts_unpinned_host_cpus() -> None:
    demand = Demand(cpu=4, ram=1024, cpu_pinning=True, numa_aligned=True)
    crowded = host("crowded", cpus={0: [0, 1, 2], 1: [8, 9, 10]})  # 6 free, 3 per node
    none = refused(demand, [crowded])
    assert (none.resource, none.available, none.rejected) == ("pcpu", 3, {"pcpu": 1})
    chosen, claim = schedule(demand, [crowded, host("roomy", cpus={0: [0, 1, 2, 3, 4]})],
                             "spread")
    assert (chosen, claim.pinned_cpus, claim.numa_node) == ("roomy", [0, 1, 2, 3], 0)


def test_each_rejected_host_is_counted_once_per_filter() -> None:
    none = refused(SMALL, [host("a", enabled=False), host("b", up=False), host("c", vcpus=0),
                           host("d", ram_mib=0), host("e", ram_mib=100), host("f", disk_gb=0)])
    assert none.rejected == {"enabled": 1, "up": 1, "vcpu": 1, "ram": 2, "disk": 1}


# NoHostFits: the closest miss ---------------------------------------------------------------

def test_the_closest_miss_is_the_host_that_passed_most_filters() -> None:
    none = refused(Demand(cpu=2, ram=1024, disk_gb=10, gpu_count=1),
                   [host("a", vcpus=0), host("b", disk_gb=5), host("c", ram_mib=10)])
    assert (none.resource, none.available) == ("disk", 5)


def test_between_misses_of_one_filter_the_one_with_most_left_is_closest() -> None:
    none = refused(SMALL, [host("a", ram_mib=100), host("b", ram_mib=900),
                           host("c", ram_mib=300)])
    assert (none.resource, none.available, none.rejected) == ("ram", 900, {"ram": 3})


def test_no_hosts_at_all_is_a_miss_on_up() -> None:
    none = refused(SMALL, [])
    assert (none.resource, none.available, none.rejected) == ("up", 0, {})


@pytest.mark.parametrize(("resource", "amount"), [
    ("vcpu", 2), ("pcpu", 2), ("ram", 1024), ("disk", 10), ("gpu", 1), ("up", 1),
    ("enabled", 1)])
def test_requested_names_what_the_demand_asks_of_the_missed_resource(resource: str,
                                                                     amount: int) -> None:
    assert requested(Demand(cpu=2, ram=1024, disk_gb=10, gpu_count=1), resource) == amount


# Weights ------------------------------------------------------------------------------------

def test_spread_goes_where_most_ram_is_free() -> None:
    hosts = [host("a", ram_mib=4096), host("b", ram_mib=16384), host("c", ram_mib=8192)]
    assert schedule(SMALL, hosts, "spread")[0] == "b"


def test_pack_goes_where_least_ram_that_fits_is_free() -> None:
    hosts = [host("a", ram_mib=4096), host("b", ram_mib=16384), host("c", ram_mib=1024),
             host("d", ram_mib=1023)]  # d does not fit at all
    assert schedule(SMALL, hosts, "pack")[0] == "c"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_vm_without_gpus_leaves_gpu_hosts_free_when_it_can(policy: str) -> None:
    gpu_host = host("gpu", ram_mib=65536 if policy == "spread" else 2048,
                    gpus=[gpu("0000:3b:00.0")])
    cpu_host = host("cpu", ram_mib=4096)
    assert schedule(SMALL, [gpu_host, cpu_host], policy)[0] == "cpu"
    # ...but takes a GPU host rather than nothing.
    assert schedule(SMALL, [gpu_host, host("full", ram_mib=0)], policy)[0] == "gpu"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_vm_with_gpus_is_weighed_by_ram_alone(policy: str) -> None:
    demand = Demand(cpu=2, ram=1024, gpu_count=1)
    hosts = [host("big", ram_mib=32768, gpus=[gpu("0000:3b:00.0")]),
             host("small", ram_mib=4096, gpus=[gpu("0000:5e:00.0")])]
    assert schedule(demand, hosts, policy)[0] == ("big" if policy == "spread" else "small")


@pytest.mark.parametrize("policy", POLICIES)
def test_ties_break_by_name_whatever_the_order_given(policy: str) -> None:
    hosts = [host("gamma"), host("alpha"), host("beta")]
    assert schedule(SMALL, hosts, policy)[0] == "alpha"
    assert schedule(SMALL, list(reversed(hosts)), policy)[0] == "alpha"


def test_the_claim_is_what_placement_chose_on_the_chosen_host() -> None:
    demand = Demand(cpu=2, ram=1024, gpu_count=1, numa_aligned=True, cpu_pinning=True)
    chosen, claim = schedule(demand, [host("a", gpus=[gpu("0000:86:00.0", 1)])], "pack")
    assert chosen == "a"
    assert ([g.id for g in claim.gpus], claim.numa_node, claim.pinned_cpus) == (
        ["0000:86:00.0"], 1, [8, 9])
