"""Placement of GPU partitions: a VF room hands out its free VFs one by one, in order, and a
GPU whose VFs are taken offers no other partition type."""
from __future__ import annotations

from src.services.rules.placement import (
    Demand,
    Free,
    PartitionRoom,
    after_claim,
    choose,
    count_fits,
    limited_by,
)
from src.services.vms.build_record import placement_of

VFS = PartitionRoom("0000:3b:00.0", "sriov_vf", "GH100", 2, 0, ("0000:3b:00.4", "0000:3b:00.5"))
MDEV = PartitionRoom("0000:3b:00.0", "nvidia-700", "NVIDIA H100-1-10C", 4)
FREE = Free(vcpus=16, ram_mib=16384, gpus=[], cpus={0: list(range(16))}, partitions=(VFS, MDEV))
DEMAND = Demand(cpu=1, ram=512, gpu_profile="sriov_vf")


def test_each_vf_claim_takes_the_next_free_vf() -> None:
    first = choose(DEMAND, FREE)
    assert first.partition == VFS and first.partition.next_vf == "0000:3b:00.4"
    left = after_claim(FREE, DEMAND, first)
    second = choose(DEMAND, left)
    assert second.partition is not None and second.partition.next_vf == "0000:3b:00.5"
    assert [room.type_id for room in left.partitions] == ["sriov_vf"]  # one type per GPU


def test_vfs_count_as_many_vms_as_free_vfs() -> None:
    assert count_fits(DEMAND, FREE) == 2
    assert limited_by(DEMAND, FREE) == (2, "gpu")


def test_the_build_record_passes_the_claimed_vf_and_makes_no_mdev() -> None:
    placement = placement_of(choose(DEMAND, FREE))
    assert placement.mdevs == () and [(vf.address, vf.parent) for vf in placement.vfs] == [
        ("0000:3b:00.4", "0000:3b:00.0")]
    mdev = placement_of(choose(Demand(cpu=1, ram=512, gpu_profile="nvidia-700"), FREE))
    assert mdev.vfs == () and [m.type_id for m in mdev.mdevs] == ["nvidia-700"]
