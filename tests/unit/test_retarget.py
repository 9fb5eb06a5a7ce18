"""A domain definition rewritten for a migration's target: its files, network, CPUs and GPUs
there, and nothing else changed."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from src.hypervisor.domain_xml import DiskSpec, DomainSpec, NicSpec, render_domain
from src.hypervisor.retarget import Retarget, data_uri, retarget

SPEC = DomainSpec(
    uuid="11111111-2222-4333-8444-555555555555", name="iaas-11111111", title="train",
    domain_type="kvm", cpu=2, ram_mib=2048, disk_path="/src/vm/disk.qcow2", disk_format="qcow2",
    nics=(NicSpec("lab", "52:54:00:aa:bb:cc"),), console_log="/src/vm/console.log",
    installation_id="inst", image_name="ubuntu", seed_path="/src/vm/seed.iso",
    volumes=(DiskSpec(path="/src/pool/vol-1.qcow2", format="qcow2", target_dev="vdc",
                      serial="vol-1"),))
WHERE = Retarget(disks={"vda": "/dst/pool/vm.qcow2", "vdb": "/dst/pool/vm-seed.iso",
                        "vdc": "/dst/pool/vol-1.qcow2"},
                 console_log="/dst/pool/vm-console.log", network="far")


def sources(xml: str) -> dict[str, str]:
    root = ET.fromstring(xml)
    return {disk.find("target").get("dev"): disk.find("source").get("file")  # type: ignore[union-attr]
            for disk in root.iterfind("./devices/disk")}


def test_files_network_and_console_are_the_targets() -> None:
    moved = retarget(render_domain(SPEC), WHERE)
    assert sources(moved) == WHERE.disks
    root = ET.fromstring(moved)
    assert root.find("./devices/serial/log").get("file") == WHERE.console_log  # type: ignore[union-attr]
    assert [i.find("source").get("network")  # type: ignore[union-attr]
            for i in root.iterfind("./devices/interface")] == ["far"]
    # Everything else is the source's own: the MAC, the metadata, the sizes.
    assert root.find("./devices/interface/mac").get("address") == SPEC.nics[0].mac  # type: ignore[union-attr]
    assert "inst" in moved and root.findtext("uuid") == SPEC.uuid
    assert root.findtext("memory") == "2048"


def test_backing_chains_of_the_source_are_dropped() -> None:
    xml = render_domain(SPEC).replace(
        "<target dev='vda' bus='virtio'/>",
        "<target dev='vda' bus='virtio'/><backingStore type='file'>"
        "<source file='/src/images/base.qcow2'/></backingStore>")
    assert "backingStore" in xml
    assert "backingStore" not in retarget(xml, WHERE)


def test_cpus_follow_the_targets_claim() -> None:
    pinned = render_domain(replace(SPEC, numa_node=0, cpuset="0-3", pinned_cpus=(1, 2)))
    moved = ET.fromstring(retarget(pinned, replace(WHERE, numa_node=1, cpuset="8-11",
                                                   pinned_cpus=(9, 10))))
    assert moved.find("vcpu").get("cpuset") == "8-11"  # type: ignore[union-attr]
    assert moved.find("numatune/memory").get("nodeset") == "1"  # type: ignore[union-attr]
    assert [pin.get("cpuset") for pin in moved.iterfind("cputune/vcpupin")] == ["9", "10"]
    free = ET.fromstring(retarget(pinned, WHERE))  # a target without a node: none of it
    assert free.find("vcpu").get("cpuset") is None  # type: ignore[union-attr]
    assert free.find("numatune") is None and free.find("cputune") is None


def test_gpus_are_the_targets_when_given() -> None:
    gpu = render_domain(replace(SPEC, machine="q35", hostdevs=((0, 0x3B, 0, 0),)))
    kept = ET.fromstring(retarget(gpu, WHERE))
    assert [h.find("source/address").get("bus") for h in kept.iterfind(  # type: ignore[union-attr]
        "./devices/hostdev")] == ["0x3b"]
    moved = ET.fromstring(retarget(gpu, replace(WHERE, hostdevs=((0, 0x5E, 0, 0),
                                                                 (0, 0x5E, 0, 1)))))
    assert [(h.find("source/address").get("bus"),  # type: ignore[union-attr]
             h.find("source/address").get("function"))  # type: ignore[union-attr]
            for h in moved.iterfind("./devices/hostdev")] == [("0x5e", "0x0"), ("0x5e", "0x1")]


def test_a_disk_without_a_place_on_the_target_is_refused() -> None:
    with pytest.raises(ValueError, match="vdc"):
        retarget(render_domain(SPEC), replace(WHERE, disks={"vda": "/a", "vdb": "/b"}))


@pytest.mark.parametrize(("uri", "expected"), [
    ("qemu+tls://10.1.2.3/system?pkipath=/x", "tcp://10.1.2.3"),
    ("qemu+ssh://root@gpu-7.lab/system", "tcp://gpu-7.lab"),
    ("qemu+tls://[fd00::7]/system", "tcp://[fd00::7]"),
    ("qemu:///system", None),
])
def test_the_data_goes_to_the_address_of_the_targets_uri(uri: str, expected: str | None) -> None:
    assert data_uri(uri) == expected


def test_a_nic_on_a_named_network_keeps_the_name_given_for_it() -> None:
    spec = replace(SPEC, nics=(NicSpec("lab", "52:54:00:aa:bb:cc"),
                               NicSpec("data", "52:54:00:aa:bb:cd")))
    moved = ET.fromstring(retarget(render_domain(spec), replace(WHERE, networks={"data": "data"})))
    assert [i.find("source").get("network")  # type: ignore[union-attr]
            for i in moved.iterfind("./devices/interface")] == ["far", "data"]
