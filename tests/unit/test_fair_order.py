"""The capacity queue's fair order: smallest share first, then the oldest; shares grow as VMs
are placed; a passed VM keeps its project's turn; could_hold judges empty hosts."""
from __future__ import annotations

from src.services.rules.fair_order import (
    Entry,
    FairTurn,
    amount_of,
    could_hold,
    fair_order,
    share_resource,
)
from src.services.rules.placement import Demand, Free
from tests.unit.test_placement import gpu


def _gpu_wait(key: str, project: str, since: str, gpus: int = 1) -> Entry:
    return Entry(key, project, since, "gpus", gpus)


def test_the_project_holding_the_smaller_share_goes_first() -> None:
    a3 = _gpu_wait("a3", "a", "2026-01-01T00:00:01Z")
    b1 = _gpu_wait("b1", "b", "2026-01-01T00:00:02Z")  # younger, but b holds nothing
    held = {("a", "gpus"): 2, ("b", "gpus"): 0}
    allowed = {("a", "gpus"): 4, ("b", "gpus"): 4}
    assert [entry.key for entry in fair_order([a3, b1], held, allowed)] == ["b1", "a3"]


def test_shares_are_of_what_each_quota_allows() -> None:
    # a holds 2 of 8 (0.25), b holds 1 of 2 (0.5): a first though it holds more GPUs.
    entries = [_gpu_wait("a", "a", "2026-01-01T00:00:02Z"),
               _gpu_wait("b", "b", "2026-01-01T00:00:01Z")]
    order = fair_order(entries, {("a", "gpus"): 2, ("b", "gpus"): 1},
                       {("a", "gpus"): 8, ("b", "gpus"): 2})
    assert [entry.key for entry in order] == ["a", "b"]


def test_within_a_project_the_oldest_goes_first_and_shares_grow() -> None:
    entries = [_gpu_wait(f"a{index}", "a", f"2026-01-01T00:00:0{index}Z") for index in (3, 1, 2)]
    entries.append(_gpu_wait("b1", "b", "2026-01-01T00:00:05Z"))
    order = fair_order(entries, {}, {("a", "gpus"): 4, ("b", "gpus"): 4})
    # Equal shares (0): the oldest, a1; then b (0 < 1/4), then a's next two.
    assert [entry.key for entry in order] == ["a1", "b1", "a2", "a3"]


def test_a_passed_vm_leaves_its_project_share_as_it_was() -> None:
    turn = FairTurn([_gpu_wait("a1", "a", "1"), _gpu_wait("a2", "a", "2"),
                     _gpu_wait("b1", "b", "3")], {}, {("a", "gpus"): 4, ("b", "gpus"): 4})
    first = turn.next()
    assert first is not None and first.key == "a1"
    turn.passed()  # a1 did not fit: a still holds nothing, so a2 comes before b1
    second = turn.next()
    assert second is not None and second.key == "a2"
    turn.placed()
    third = turn.next()
    assert third is not None and third.key == "b1"
    turn.placed()
    assert turn.next() is None
    assert turn.held == {("a", "gpus"): 1, ("b", "gpus"): 1}


def test_gpu_vms_are_judged_by_gpus_others_by_what_ran_short() -> None:
    assert share_resource(Demand(cpu=8, ram=1024, gpu_count=2), "ram") == "gpus"
    assert share_resource(Demand(cpu=8, ram=1024), "ram") == "ram"
    assert share_resource(Demand(cpu=8, ram=1024), "host") == "vcpus"
    assert amount_of(Demand(cpu=8, ram=1024, gpu_count=2), "gpus") == 2
    partition = Demand(cpu=8, ram=1024, gpu_profile="sriov_vf")  # one GPU, as in the quota
    assert (share_resource(partition, "gpu"), amount_of(partition, "gpus")) == ("gpus", 1)
    assert amount_of(Demand(cpu=8, ram=1024), "ram") == 1024


def test_could_hold_judges_each_host_as_if_it_were_empty() -> None:
    two = Free(vcpus=16, ram_mib=4096, gpus=[gpu("a", 0), gpu("b", 0)], cpus={0: [0, 1]})
    one = Free(vcpus=16, ram_mib=4096, gpus=[gpu("c", 0)], cpus={0: [0, 1]})
    assert could_hold(Demand(cpu=1, ram=512, gpu_count=2), {"two": two, "one": one}) == {"two"}
    assert could_hold(Demand(cpu=1, ram=512, gpu_count=3), {"two": two, "one": one}) == set()


def test_fair_order_is_a_fair_turn_where_every_vm_is_placed() -> None:
    # Mixed resources per project (shares that fall between a project's VMs) and ties.
    resources = ["gpus", "vcpus", "ram"]
    entries = [Entry(f"v{index:03d}", f"p{index % 4}", f"2026-01-01T00:{index % 7:02d}:00Z",
                     resources[index % 3], 1 + index % 5) for index in range(120)]
    held = {("p0", "gpus"): 3, ("p1", "vcpus"): 40, ("p2", "ram"): 2048}
    allowed = {(f"p{project}", resource): 64 * (1 + project)
               for project in range(4) for resource in resources}
    turn, expected = FairTurn(entries, held, allowed), []
    while (entry := turn.next()) is not None:
        expected.append(entry.key)
        turn.placed()
    assert [entry.key for entry in fair_order(entries, held, allowed)] == expected
