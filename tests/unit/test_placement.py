"""Placement decisions: shortfalls, NUMA packing, pinning, skips, count_fits = repeated choose."""
from __future__ import annotations

import random

import pytest

from src.database.gpus import GpuRow
from src.services.rules.placement import (
    Claim,
    Demand,
    Free,
    Shortfall,
    after_claim,
    choose,
    count_fits,
)

NOW = "2026-01-01T00:00:00.000000Z"


def gpu(gpu_id: str, node: int | None) -> GpuRow:
    return GpuRow(id=gpu_id, vendor_id="10de", vendor_name="NVIDIA", product_id="1eb8",
                  product_name="Tesla T4", iommu_group=None, numa_node=node, driver="vfio-pci",
                  unavailable_reason=None, refreshed_at=NOW)


def free(vcpus: int = 64, ram: int = 65536, gpus: list[GpuRow] | None = None,
         cpus: dict[int, list[int]] | None = None) -> Free:
    return Free(vcpus=vcpus, ram_mib=ram, gpus=gpus or [],
                cpus={0: [0, 1, 2, 3], 1: [4, 5, 6, 7]} if cpus is None else cpus)


def shortfall(demand: Demand, room: Free, skip: frozenset[str] = frozenset()) -> tuple[str, int]:
    with pytest.raises(Shortfall) as caught:
        choose(demand, room, skip)
    return caught.value.resource, caught.value.available


def test_plain_demand_that_exactly_fits_gets_an_empty_claim() -> None:
    assert choose(Demand(cpu=4, ram=2048), free(vcpus=4, ram=2048)) == Claim()


@pytest.mark.parametrize("free_vcpus, cpu, available", [(3, 4, 3), (0, 1, 0), (-5, 1, 0)])
def test_vcpu_shortfall_reports_what_is_left_never_negative(
        free_vcpus: int, cpu: int, available: int) -> None:
    assert shortfall(Demand(cpu=cpu, ram=512), free(vcpus=free_vcpus)) == ("vcpu", available)


@pytest.mark.parametrize("free_ram, ram, available",
                         [(1023, 1024, 1023), (0, 128, 0), (-300, 128, 0)])
def test_ram_shortfall_reports_what_is_left_never_negative(free_ram: int, ram: int,
                                                           available: int) -> None:
    assert shortfall(Demand(cpu=1, ram=ram), free(ram=free_ram)) == ("ram", available)


def test_vcpu_is_named_before_ram_when_both_are_short() -> None:
    assert shortfall(Demand(cpu=9, ram=9000), free(vcpus=8, ram=8000)) == ("vcpu", 8)


def test_gpu_count_shortfall_names_the_gpus_there_are() -> None:
    room = free(gpus=[gpu("a", 0)])
    assert shortfall(Demand(cpu=1, ram=512, gpu_count=2), room) == ("gpu", 1)
    assert shortfall(Demand(cpu=1, ram=512, gpu_count=1), free()) == ("gpu", 0)


def test_gpus_without_numa_alignment_come_from_any_node() -> None:
    claim = choose(Demand(cpu=1, ram=512, gpu_count=2), free(gpus=[gpu("a", 0), gpu("b", 1)]))
    assert [g.id for g in claim.gpus] == ["a", "b"]
    assert claim.numa_node is None and claim.node_cpus == [] and claim.pinned_cpus == []


def test_numa_aligned_gpus_must_all_sit_on_one_node() -> None:
    room = free(gpus=[gpu("a", 0), gpu("b", 1)])
    aligned = Demand(cpu=1, ram=512, gpu_count=2, numa_aligned=True)
    assert shortfall(aligned, room) == ("gpu", 1)
    room = free(gpus=[gpu("a", 0), gpu("b", 1), gpu("c", 1)])
    claim = choose(aligned, room)
    assert claim.numa_node == 1
    assert {g.id for g in claim.gpus} == {"b", "c"}
    assert claim.node_cpus == [4, 5, 6, 7]


def test_numa_aligned_packs_onto_the_fullest_node_that_fits() -> None:
    demand = Demand(cpu=1, ram=512, gpu_count=1, numa_aligned=True)
    room = free(gpus=[gpu("a", 0), gpu("b", 0), gpu("c", 1)])
    nodes = []
    for _ in range(3):
        claim = choose(demand, room)
        nodes.append(claim.numa_node)
        room = after_claim(room, demand, claim)
    assert nodes == [1, 0, 0]
    assert shortfall(demand, room) == ("gpu", 0)


def test_numa_ties_on_gpus_go_to_fewer_free_cpus_then_the_lower_node() -> None:
    demand = Demand(cpu=1, ram=512, gpu_count=1, numa_aligned=True)
    gpus = [gpu("a", 0), gpu("b", 1)]
    assert choose(demand, free(gpus=gpus, cpus={0: [0, 1, 2], 1: [3, 4]})).numa_node == 1
    assert choose(demand, free(gpus=gpus, cpus={0: [0, 1], 1: [2, 3, 4]})).numa_node == 0
    assert choose(demand, free(gpus=gpus, cpus={0: [0, 1], 1: [2, 3]})).numa_node == 0


def test_gpu_with_unknown_numa_node_is_acceptable_to_any_node() -> None:
    demand = Demand(cpu=1, ram=512, gpu_count=1, numa_aligned=True)
    room = free(gpus=[gpu("local", 0), gpu("anywhere", None)])
    claim = choose(demand, room)  # node 0 sees two GPUs, node 1 only the unknown one: fuller
    assert claim.numa_node == 1 and [g.id for g in claim.gpus] == ["anywhere"]
    both = choose(Demand(cpu=1, ram=512, gpu_count=2, numa_aligned=True), room)
    assert both.numa_node == 0 and {g.id for g in both.gpus} == {"local", "anywhere"}


def test_pinning_takes_distinct_host_cpus_across_nodes() -> None:
    demand = Demand(cpu=3, ram=512, cpu_pinning=True)
    room = free(cpus={0: [0, 1], 1: [2, 3, 4, 5]})
    taken: list[int] = []
    for _ in range(2):
        claim = choose(demand, room)
        assert len(claim.pinned_cpus) == 3 and claim.numa_node is None
        taken += claim.pinned_cpus
        room = after_claim(room, demand, claim)
    assert sorted(taken) == [0, 1, 2, 3, 4, 5]
    assert shortfall(demand, room) == ("pcpu", 0)


def test_pinned_shortfall_is_pcpu_even_with_vcpus_to_spare() -> None:
    room = free(vcpus=64, cpus={0: [0, 1], 1: [2, 3]})
    assert shortfall(Demand(cpu=5, ram=512, cpu_pinning=True), room) == ("pcpu", 4)


def test_numa_aligned_pinning_stays_on_one_node() -> None:
    room = free(cpus={0: [0, 1], 1: [2, 3, 4]})
    claim = choose(Demand(cpu=2, ram=512, numa_aligned=True, cpu_pinning=True), room)
    assert claim.numa_node == 0 and sorted(claim.pinned_cpus) == [0, 1]
    claim = choose(Demand(cpu=3, ram=512, numa_aligned=True, cpu_pinning=True), room)
    assert claim.numa_node == 1 and sorted(claim.pinned_cpus) == [2, 3, 4]
    assert claim.node_cpus == [2, 3, 4]
    assert shortfall(Demand(cpu=4, ram=512, numa_aligned=True, cpu_pinning=True), room) == \
        ("pcpu", 3)


def test_gpus_and_pinned_cpus_must_fit_on_the_same_node() -> None:
    room = free(gpus=[gpu("a", 0)], cpus={0: [0], 1: [1, 2, 3]})
    demand = Demand(cpu=2, ram=512, gpu_count=1, numa_aligned=True, cpu_pinning=True)
    assert shortfall(demand, room)[0] == "pcpu"
    unaligned = choose(Demand(cpu=2, ram=512, gpu_count=1, cpu_pinning=True), room)
    assert [g.id for g in unaligned.gpus] == ["a"] and len(set(unaligned.pinned_cpus)) == 2


@pytest.mark.parametrize("skip, demand, room", [
    ("vcpu", Demand(cpu=10, ram=512), free(vcpus=2)),
    ("ram", Demand(cpu=1, ram=4096), free(ram=1024)),
    ("gpu", Demand(cpu=1, ram=512, gpu_count=2), free(gpus=[gpu("a", 0)])),
    ("pcpu", Demand(cpu=9, ram=512, cpu_pinning=True), free()),
])
def test_skip_ignores_a_resource_that_would_otherwise_be_short(skip: str, demand: Demand,
                                                              room: Free) -> None:
    assert shortfall(demand, room)[0] == skip
    choose(demand, room, frozenset({skip}))
    others = frozenset({"vcpu", "ram", "gpu", "pcpu"} - {skip})
    assert shortfall(demand, room, others)[0] == skip


@pytest.mark.parametrize("vcpus, ram, cpu, ram_each, fits", [
    (8, 8192, 2, 1024, 4), (8, 2048, 2, 1024, 2), (7, 8192, 2, 1024, 3), (1, 8192, 2, 1024, 0),
    (-4, 8192, 1, 1024, 0), (8, -1, 1, 1024, 0),
])
def test_count_fits_is_plain_division_without_gpus_or_pinning(
        vcpus: int, ram: int, cpu: int, ram_each: int, fits: int) -> None:
    room = free(vcpus=vcpus, ram=ram, gpus=[gpu("a", 0)])
    assert count_fits(Demand(cpu=cpu, ram=ram_each), room) == fits
    assert count_fits(Demand(cpu=cpu, ram=ram_each, numa_aligned=True), room) == fits


def test_count_fits_counts_whole_numa_aligned_gpu_claims() -> None:
    room = free(gpus=[gpu("a", 0), gpu("b", 0), gpu("c", 1), gpu("d", 1)])
    assert count_fits(Demand(cpu=1, ram=512, gpu_count=2, numa_aligned=True), room) == 2
    assert count_fits(Demand(cpu=1, ram=512, gpu_count=3, numa_aligned=True), room) == 0
    assert count_fits(Demand(cpu=1, ram=512, gpu_count=3), room) == 1
    assert count_fits(Demand(cpu=1, ram=512, gpu_count=1), free(vcpus=2, gpus=room.gpus)) == 2
    everything_but_gpu = frozenset({"vcpu", "ram", "pcpu"})
    assert count_fits(Demand(cpu=1, ram=512, gpu_count=1), free(vcpus=0, gpus=room.gpus),
                      everything_but_gpu) == 4


def random_case(rng: random.Random) -> tuple[Demand, Free, frozenset[str]]:
    cpus: dict[int, list[int]] = {}
    next_cpu = 0
    for node in range(rng.randint(1, 3)):
        count = rng.randint(0, 5)
        cpus[node] = list(range(next_cpu, next_cpu + count))
        next_cpu += count
    gpus = [gpu(f"g{index}", rng.choice([*cpus, None])) for index in range(rng.randint(0, 5))]
    room = Free(vcpus=rng.randint(-2, 20), ram_mib=rng.randint(-512, 16384), gpus=gpus, cpus=cpus)
    demand = Demand(cpu=rng.randint(1, 3), ram=rng.choice([256, 1024, 3000]),
                    gpu_count=rng.randint(0, 2), numa_aligned=rng.random() < 0.5,
                    cpu_pinning=rng.random() < 0.5)
    skip = frozenset(resource for resource in ("gpu", "pcpu") if rng.random() < 0.2)
    return demand, room, skip


def fits_one_by_one(demand: Demand, room: Free, skip: frozenset[str]) -> int:
    placed = 0
    while placed < 1000:
        try:
            claim = choose(demand, room, skip)
        except Shortfall:
            return placed
        placed += 1
        room = after_claim(room, demand, claim)
    raise AssertionError("choose never ran out")


@pytest.mark.parametrize("seed", range(40))
def test_count_fits_equals_repeated_choose_and_after_claim(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        demand, room, skip = random_case(rng)
        assert count_fits(demand, room, skip) == fits_one_by_one(demand, room, skip), \
            (demand, room, skip)


@pytest.mark.parametrize("seed", range(10))
def test_claims_never_share_a_gpu_or_a_pinned_cpu(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        demand, room, _ = random_case(rng)
        gpus: list[str] = []
        pinned: list[int] = []
        for _ in range(count_fits(demand, room)):
            claim = choose(demand, room)
            assert len(claim.gpus) == demand.gpu_count
            assert len(claim.pinned_cpus) == (demand.cpu if demand.cpu_pinning else 0)
            if demand.numa_aligned:
                assert claim.numa_node is not None
                assert all(g.numa_node in (None, claim.numa_node) for g in claim.gpus)
                assert set(claim.pinned_cpus) <= set(room.cpus[claim.numa_node])
            gpus += [g.id for g in claim.gpus]
            pinned += claim.pinned_cpus
            room = after_claim(room, demand, claim)
        assert len(gpus) == len(set(gpus)) and len(pinned) == len(set(pinned))
