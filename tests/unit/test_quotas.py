"""Quota enforcement on a real SQLite schema: limits, boundaries, what failed builds still hold."""
from __future__ import annotations

import pytest

from src import errors
from src.database import gpus as gpu_dao
from src.database import projects as project_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.services.rules.quotas import enforce
from tests.unit.conftest import IMAGE_ID, NOW

NOTHING = {"instances": 0, "vcpus": 0, "ram": 0, "gpus": 0}


@pytest.fixture
def db(db: Database) -> Database:
    """The unit database with the projects p and other."""
    with db.write() as conn:
        project_dao.create(conn, "p", {}, NOW)
        project_dao.create(conn, "other", {}, NOW)
    return db


def set_limits(db: Database, **limits: int | None) -> None:
    with db.write() as conn:
        project_dao.set_limits(conn, "p", dict(limits))


def add_vm(db: Database, name: str, cpu: int, ram: int, gpus: int = 0, project: str = "p",
           failed_build: bool = False) -> None:
    """A VM row of project holding gpus GPUs; a failed build gives its resources back."""
    vm_id = f"vm-{name}"
    with db.write() as conn:
        vm_dao.insert(conn, vm_dao.VmRow(
            id=vm_id, name=name, cpu=cpu, ram=ram, disk_gb=1, image_id=IMAGE_ID,
            image_name="base", status="error" if failed_build else "running", vnc_port=None,
            error_code="build_failed" if failed_build else None, error_message=None,
            created_at=NOW, updated_at=NOW, project=project))
        gpu_ids = [f"0000:{name}:{index:02x}.0" for index in range(gpus)]
        for gpu_id in gpu_ids:
            gpu_dao.upsert(conn, gpu_dao.GpuRow(
                id=gpu_id, vendor_id="10de", vendor_name=None, product_id="1eb8",
                product_name="Tesla T4", iommu_group=None, numa_node=0, driver="vfio-pci",
                unavailable_reason=None, refreshed_at=NOW))
        gpu_dao.allocate(conn, "local", gpu_ids, vm_id, NOW)
        if failed_build:
            vm_dao.release_resources(conn, vm_id)


def check(db: Database, **requested: int) -> None:
    with db.read() as conn:
        enforce(conn, "p", {**NOTHING, **requested})


def refusal(db: Database, **requested: int) -> dict[str, object]:
    with pytest.raises(errors.QuotaExceeded) as caught:
        check(db, **requested)
    return caught.value.details


def test_unlimited_project_passes_any_request(db: Database) -> None:
    add_vm(db, "a", cpu=64, ram=262144, gpus=4)
    check(db, instances=1000, vcpus=10**6, ram=10**9, gpus=1000)


def test_default_project_starts_unlimited(db: Database) -> None:
    with db.read() as conn:
        enforce(conn, "default", {"instances": 500, "vcpus": 5000, "ram": 10**7, "gpus": 50})


@pytest.mark.parametrize("resource, limit, requested", [
    ("instances", 2, 1), ("vcpus", 8, 3), ("ram", 4096, 1025), ("gpus", 2, 2),
])
def test_each_resource_over_its_limit_is_refused_with_the_figures(
        db: Database, resource: str, limit: int, requested: int) -> None:
    add_vm(db, "a", cpu=4, ram=2048, gpus=1)
    add_vm(db, "b", cpu=2, ram=1024)
    in_use = {"instances": 2, "vcpus": 6, "ram": 3072, "gpus": 1}[resource]
    set_limits(db, **{resource: limit})
    assert refusal(db, **{resource: requested}) == {
        "resource": resource, "limit": limit, "in_use": in_use, "requested": requested}


@pytest.mark.parametrize("resource, limit, request_at, request_over", [
    ("instances", 3, 2, 3), ("vcpus", 8, 4, 5), ("ram", 4096, 2048, 2049), ("gpus", 2, 1, 2),
])
def test_exactly_at_the_limit_passes_one_more_does_not(
        db: Database, resource: str, limit: int, request_at: int, request_over: int) -> None:
    add_vm(db, "held", cpu=4, ram=2048, gpus=1)  # 1 instance, 4 vCPUs, 2048 MiB, 1 GPU
    set_limits(db, **{resource: limit})
    check(db, **{resource: request_at})
    assert refusal(db, **{resource: request_over})["resource"] == resource


@pytest.mark.parametrize("resource", ["instances", "vcpus", "ram", "gpus"])
def test_asking_for_none_of_a_resource_at_or_over_its_limit_passes(db: Database,
                                                                    resource: str) -> None:
    add_vm(db, "held", cpu=4, ram=2048, gpus=1)
    usage = {"instances": 1, "vcpus": 4, "ram": 2048, "gpus": 1}
    set_limits(db, **{resource: usage[resource]})
    check(db, **{resource: 0})
    set_limits(db, **{resource: 0})  # lowered below what is already used
    check(db, **{resource: 0})
    assert refusal(db, **{resource: 1})["in_use"] == usage[resource]


def test_zero_limit_refuses_any_amount(db: Database) -> None:
    set_limits(db, gpus=0)
    check(db, instances=1, vcpus=2, ram=512)
    assert refusal(db, instances=1, vcpus=2, ram=512, gpus=1) == {
        "resource": "gpus", "limit": 0, "in_use": 0, "requested": 1}


def test_a_missing_resource_in_the_request_counts_as_zero(db: Database) -> None:
    set_limits(db, vcpus=0)
    with db.read() as conn:
        enforce(conn, "p", {"instances": 1, "ram": 512})


def test_first_resource_over_its_limit_is_named(db: Database) -> None:
    set_limits(db, instances=0, vcpus=0, ram=0, gpus=0)
    assert refusal(db, instances=1, vcpus=1, ram=1, gpus=1)["resource"] == "instances"
    assert refusal(db, vcpus=1, ram=1, gpus=1)["resource"] == "vcpus"
    assert refusal(db, ram=1, gpus=1)["resource"] == "ram"


def test_limits_can_be_lifted_again(db: Database) -> None:
    set_limits(db, vcpus=1)
    assert refusal(db, vcpus=2)["limit"] == 1
    set_limits(db, vcpus=None)
    check(db, vcpus=2)


def test_failed_builds_free_vcpus_ram_and_gpus_but_still_count_as_instances(db: Database) -> None:
    add_vm(db, "failed", cpu=8, ram=8192, gpus=2, failed_build=True)
    add_vm(db, "alive", cpu=2, ram=1024, gpus=1)
    with db.read() as conn:
        assert project_dao.usage(conn, "p") == {"instances": 2, "vcpus": 2, "ram": 1024, "gpus": 1,
                                                "disk_gb": 1, "images_gb": 0, "images": 0,
                                                "keypairs": 0, "tokens": 0,
                                                "volumes": 0, "volumes_gb": 0,
                                                "security_groups": 0}
    set_limits(db, instances=2, vcpus=4, ram=2048, gpus=2)
    check(db, vcpus=2, ram=1024, gpus=1)
    assert refusal(db, instances=1) == {"resource": "instances", "limit": 2, "in_use": 2,
                                        "requested": 1}
    assert refusal(db, vcpus=3)["in_use"] == 2
    assert refusal(db, gpus=2)["in_use"] == 1


def test_other_projects_vms_do_not_count(db: Database) -> None:
    add_vm(db, "theirs", cpu=16, ram=16384, gpus=2, project="other")
    set_limits(db, instances=1, vcpus=4, ram=4096, gpus=1)
    check(db, instances=1, vcpus=4, ram=4096, gpus=1)
    add_vm(db, "mine", cpu=1, ram=256)
    assert refusal(db, instances=1)["in_use"] == 1
