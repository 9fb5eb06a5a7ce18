"""A GPU whose SR-IOV virtual functions each offer mdev types (an NVIDIA vGPU card in SR-IOV
mode lists its vGPU types on its VFs, not on the physical function): a VF is one device, so it
is either passed through whole or holds mdevs, never both at once."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from src.app import App
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import ONE_GPU, create, member, running
from tests.integration.test_gpu_partitions import (
    RecordedMdevs,
    partition_flavor,
    served_with,
)
from tests.integration.test_gpu_virtual_functions import PHYSICAL, VFS, _function, vf_of
from tests.support import host_xml

ONE_TYPE = """      <capability type='mdev_types'>
        <type id='nvidia-700'>
          <name>NVIDIA H100-1-10C</name>
          <deviceAPI>vfio-pci</deviceAPI>
          <availableInstances>1</availableInstances>
        </type>
      </capability>
"""
VIRTUAL = "".join(_function(vf, 40 + vf, ONE_TYPE + "      <capability type='phys_function'>\n"
                            "        <address domain='0x0000' bus='0x3b' slot='0x00' "
                            "function='0x0'/>\n      </capability>\n", "pci_0000_3b_00_0")
                  for vf in VFS)
ADDRESSES = {f"0000:3b:00.{vf}" for vf in VFS}


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "vf-mdev-host.xml"
    path.write_text(host_xml("iaas-test", devices=PHYSICAL + VIRTUAL))
    return path


@pytest.fixture
def mdevs(app: App) -> RecordedMdevs:
    recorded = RecordedMdevs()
    app.hypervisor.mdevs = recorded
    return recorded


@pytest.fixture
def admin(app: App, mdevs: RecordedMdevs) -> Iterator[HttpClient]:
    with served_with(app, (partition_flavor("vf.1", "sriov_vf"),
                           partition_flavor("p.1", "nvidia-700")), refresh_gpus=True) as client:
        yield client


def test_the_host_offers_mdevs_on_its_virtual_functions(admin: HttpClient) -> None:
    offers = admin.get("/v1/gpus").body["partitions"]
    assert {offer["parent"] for offer in offers if offer["kind"] == "mdev"} == ADDRESSES


def test_no_vf_is_passed_through_and_split_in_mdevs_at_once(
        app: App, admin: HttpClient, mdevs: RecordedMdevs) -> None:
    through = []
    for turn in range(len(VFS)):  # alternately: a VF whole, an mdev on a VF
        flavor = "vf.1" if turn % 2 == 0 else "p.1"
        reply = admin.post("/v1/vms", {"name": f"vm-{turn}", "image_name": "base",
                                       "flavor": flavor})
        if reply.status == 409:
            continue  # no free device left of that kind: fine, as long as none is shared
        assert reply.status == 202, reply.body
        vm = running(admin, reply.body)
        if flavor == "vf.1":
            through.append(vf_of(app, vm))
    split = {request.parent for request in mdevs.made.values()}
    assert through and split, (through, split)
    assert not split & set(through), f"VF(s) {split & set(through)} passed through and split"


def test_an_mdev_never_lands_on_a_vf_a_vm_holds_whole(
        app: App, admin: HttpClient, mdevs: RecordedMdevs) -> None:
    through = {vf_of(app, running(admin, create(admin, f"vf-{n}", "vf.1"))) for n in range(2)}
    running(admin, create(admin, "part", "p.1"))
    (made,) = mdevs.made.values()
    assert made.parent not in through, f"an mdev made on {made.parent}, passed through already"


def test_a_gpu_held_whole_lends_no_mdev_of_its_vfs_nor_goes_whole_while_they_hold_one(
        admin: HttpClient, mdevs: RecordedMdevs) -> None:
    assert admin.post("/v1/flavors", ONE_GPU).status == 201
    whole = running(admin, create(admin, "whole", "g.1"))
    assert whole["gpus"] == ["0000:3b:00.0"]
    reply = admin.post("/v1/vms", {"name": "part-1", "image_name": "base", "flavor": "p.1"})
    assert reply.status == 409, (reply.body, mdevs.made)
    assert admin.wait_task(admin.delete(f"/v1/vms/{whole['id']}").body["id"])[
        "status"] == "succeeded"
    running(admin, create(admin, "part-2", "p.1"))
    reply = admin.post("/v1/vms", {"name": "whole-2", "image_name": "base", "flavor": "g.1"})
    assert reply.status == 409, reply.body


def test_a_partition_counts_as_one_gpu_in_the_quota(app: App, admin: HttpClient) -> None:
    team = member(app, admin.base_url, "team-a", gpus=1)
    running(team, create(team, "vf-1", "vf.1"))
    for flavor in ("vf.1", "p.1"):
        reply = team.post("/v1/vms", {"name": f"more-{flavor[0]}", "image_name": "base",
                                      "flavor": flavor})
        assert reply.status == 403, reply.body
        assert reply.body["error"]["code"] == "quota_exceeded"
    assert team.get("/v1/projects/team-a/quota").body["in_use"]["gpus"] == 1
    none = member(app, admin.base_url, "team-b", gpus=0)
    reply = none.post("/v1/vms", {"name": "vf-2", "image_name": "base", "flavor": "vf.1",
                                  "wait_for_capacity": True})
    assert reply.status == 403, reply.body
    assert reply.body["error"]["code"] == "quota_exceeded"


def test_the_listing_counts_a_vf_holding_an_mdev_as_taken(admin: HttpClient) -> None:
    def vfs_available() -> list[int]:
        return [offer["available"] for offer in admin.get("/v1/gpus").body["partitions"]
                if offer["kind"] == "vf"]

    assert vfs_available() == [len(VFS)]
    running(admin, create(admin, "part", "p.1"))
    assert vfs_available() == [len(VFS) - 1]
    made = 0  # the listing says what the scheduler gives
    while admin.post("/v1/vms", {"name": f"vf-{made}", "image_name": "base",
                                 "flavor": "vf.1"}).status == 202:
        made += 1
    assert made == len(VFS) - 1
