"""Volume disks and pools on the test driver: domains with volumes define with libvirt's schema
validation and read back as they were rendered; pools are found, cloned and guarded."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from src.hypervisor.domain_xml import (
    DiskSpec,
    DomainSpec,
    NicSpec,
    domain_name,
    render_domain,
)
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError, LayerInUse, ShrinkRefused
from src.hypervisor.hotplug import DiskTarget

MIB = 1024 ** 2
DATASET = DiskSpec(path="/volumes/dataset.qcow2", format="qcow2", target_dev="vdc",
                   serial="vol-dataset", read_only=True, shareable=True)
SCRATCH = DiskSpec(path="/volumes/scratch.qcow2", format="qcow2", target_dev="vdd",
                   serial="vol-scratch")


@pytest.fixture
def hypervisor(test_host: Path) -> Iterator[Hypervisor]:
    hv = Hypervisor(f"test://{test_host}")
    yield hv
    hv.close()


def _spec(machine: str, volumes: tuple[DiskSpec, ...]) -> DomainSpec:
    vm_id = str(uuid.uuid4())
    return DomainSpec(uuid=vm_id, name=domain_name(vm_id), title="with-volumes", domain_type="test",
                      cpu=1, ram_mib=256, disk_path="/instances/disk.qcow2", disk_format="qcow2",
                      nics=(NicSpec("iaas-test", "52:54:00:00:00:01"),),
                      console_log="/instances/console.log", installation_id="test",
                      image_name="tiny",
                      seed_path="/instances/seed.iso", machine=machine, volumes=volumes)


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_a_vm_with_volumes_defines_validated_and_reads_back(hypervisor: Hypervisor,
                                                            machine: str) -> None:
    spec = _spec(machine, (DATASET, SCRATCH))
    hypervisor.define(render_domain(spec))
    expected = [
        DiskTarget("vda", "/instances/disk.qcow2", False, False, None),
        DiskTarget("vdb", "/instances/seed.iso", True, False, None),
        DiskTarget("vdc", DATASET.path, True, True, "vol-dataset"),
        DiskTarget("vdd", SCRATCH.path, False, False, "vol-scratch"),
    ]
    assert hypervisor.disk_targets(spec.uuid, live=False) == expected
    hypervisor.start(spec.uuid)
    assert [replace(disk, alias=None) for disk in hypervisor.disk_targets(spec.uuid, live=True)
            ] == expected


def test_two_volumes_on_one_target_are_refused_by_libvirt(hypervisor: Hypervisor) -> None:
    spec = _spec("pc", (DATASET, replace(SCRATCH, target_dev="vdc")))
    with pytest.raises(HypervisorError, match="vdc"):
        hypervisor.define(render_domain(spec))


def test_a_pool_over_a_directory_is_the_one_there_whatever_its_name(
        hypervisor: Hypervisor) -> None:
    pools = hypervisor.pools
    assert pools.dir_pool("iaas-images-0b8e2d1c", "/images") == "iaas-images-0b8e2d1c"
    assert pools.dir_pool("iaas-images-0b8e2d1c", "/images/") == "iaas-images-0b8e2d1c"
    assert pools.dir_pool("iaas-images-other", "/images") == "iaas-images-0b8e2d1c"
    with pytest.raises(HypervisorError, match="iaas-images-0b8e2d1c is over /images, not /else"):
        pools.dir_pool("iaas-images-0b8e2d1c", "/else")


def test_a_clone_never_shrinks_its_source_and_leaves_nothing(hypervisor: Hypervisor) -> None:
    # One pool: the test driver looks a clone's source up in the new volume's pool (across
    # pools, as qemu:///system does it, see tests/e2e/test_volume_storage.py).
    pools = hypervisor.pools
    images = volumes = pools.dir_pool("volumes", "/volumes")
    pools.create_volume(images, "base.qcow2", 64 * MIB, "qcow2")
    with pytest.raises(ShrinkRefused, match="more than the 33554432 asked"):
        pools.clone_volume(volumes, "small.qcow2", images, "base.qcow2", 32 * MIB)
    assert pools.volumes(volumes) == ["base.qcow2"]
    path = pools.clone_volume(volumes, "copy.qcow2", images, "base.qcow2", 64 * MIB)
    info = pools.volume_info(volumes, "copy.qcow2")
    assert info is not None and (info.path, info.format, info.capacity_bytes) == (
        path, "qcow2", 64 * MIB)
    assert pools.volume_info(volumes, "missing.qcow2") is None
    with pytest.raises(ShrinkRefused, match="never shrunk"):
        pools.resize_volume(volumes, "copy.qcow2", 32 * MIB)
    pools.resize_volume(volumes, "copy.qcow2", 64 * MIB)  # as big already: nothing to do


def test_a_layer_others_are_backed_by_is_never_deleted(hypervisor: Hypervisor) -> None:
    pools = hypervisor.pools
    pool = pools.dir_pool("volumes", "/volumes")
    frozen = pools.create_volume(pool, "vol-1.qcow2", 64 * MIB, "qcow2")
    pools.create_volume(pool, "vol-2.qcow2", 64 * MIB, "qcow2", backing=(frozen, "qcow2"))
    info = pools.volume_info(pool, "vol-2.qcow2")
    assert info is not None and info.backing_path == frozen
    with pytest.raises(LayerInUse, match="vol-1.qcow2 is the backing file of vol-2.qcow2"):
        pools.delete_layer(pool, "vol-1.qcow2")
    assert sorted(pools.volumes(pool)) == ["vol-1.qcow2", "vol-2.qcow2"]
    pools.delete_layer(pool, "vol-2.qcow2")
    pools.delete_layer(pool, "vol-1.qcow2")
    pools.delete_layer(pool, "vol-1.qcow2")  # gone already: fine
    assert pools.volumes(pool) == []
