"""A domain definition rewritten for another host: its files, network, CPUs and GPUs there.

The definition a migration sends is the source's own (the live one keeps every device address
QEMU needs); only what differs between the hosts is changed, so nothing else can drift.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from src.hypervisor.domain_xml import METADATA_NS

PciAddress = tuple[int, int, int, int]  # domain, bus, slot, function


@dataclass(frozen=True)
class Retarget:
    """What the target host gives the domain."""

    disks: dict[str, str]  # target dev -> the file on the target
    console_log: str
    network: str  # every NIC joins this network of the target, but those in networks
    numa_node: int | None = None
    cpuset: str = ""  # libvirt's cpuset syntax; empty: no pinning to a node's CPUs
    pinned_cpus: tuple[int, ...] = ()
    hostdevs: tuple[PciAddress, ...] | None = None  # None: leave the domain's as they are
    drop: frozenset[str] = field(default_factory=frozenset)  # target devs to leave out
    networks: dict[str, str] = field(default_factory=dict)  # source network -> target's


def retarget(xml: str, where: Retarget) -> str:
    """The definition xml with where's files, network, CPUs (and GPUs) instead of its own.

    Raises: ValueError when xml has a disk or NIC the target was given no place for.
    """
    ET.register_namespace("iaas", METADATA_NS)
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        raise ValueError("the domain definition has no <devices>")
    _disks(devices, where)
    for log in devices.iterfind("./serial/log"):
        log.set("file", where.console_log)
    for interface in devices.iterfind("./interface"):
        source = interface.find("source")
        if interface.get("type") != "network" or source is None:
            raise ValueError(f"a NIC of type {interface.get('type')!r} cannot be moved")
        network = where.networks.get(source.get("network", ""), where.network)
        source.attrib.clear()
        source.set("network", network)
    _cpus(root, where)
    if where.hostdevs is not None:
        _hostdevs(devices, where.hostdevs)
    return ET.tostring(root, encoding="unicode")


def _disks(devices: ET.Element, where: Retarget) -> None:
    for disk in list(devices.iterfind("./disk")):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev in where.drop:
            devices.remove(disk)
            continue
        if dev not in where.disks:
            raise ValueError(f"disk {dev or '?'} has no file on the target")
        for backing in disk.findall("backingStore"):  # the target's own chain is probed there
            disk.remove(backing)
        source = disk.find("source")
        if source is None:
            source = ET.SubElement(disk, "source")
        for name in ("dev", "index"):
            source.attrib.pop(name, None)
        disk.set("type", "file")
        source.set("file", where.disks[dev])


def _cpus(root: ET.Element, where: Retarget) -> None:
    vcpu = root.find("vcpu")
    if vcpu is not None:
        vcpu.attrib.pop("cpuset", None)
        if where.cpuset:
            vcpu.set("cpuset", where.cpuset)
    for name in ("cputune", "numatune"):
        found = root.find(name)
        if found is not None:
            root.remove(found)
    anchor = list(root).index(vcpu) + 1 if vcpu is not None else len(root)
    if where.numa_node is not None:
        numatune = ET.Element("numatune")
        ET.SubElement(numatune, "memory", mode="strict", nodeset=str(where.numa_node))
        root.insert(anchor, numatune)
    if where.pinned_cpus:
        cputune = ET.Element("cputune")
        for index, cpu in enumerate(where.pinned_cpus):
            ET.SubElement(cputune, "vcpupin", vcpu=str(index), cpuset=str(cpu))
        root.insert(anchor, cputune)


def _hostdevs(devices: ET.Element, addresses: tuple[PciAddress, ...]) -> None:
    for hostdev in devices.findall("./hostdev"):
        if hostdev.get("type") == "pci":
            devices.remove(hostdev)
    for domain, bus, slot, function in addresses:
        hostdev = ET.SubElement(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
        ET.SubElement(ET.SubElement(hostdev, "source"), "address", domain=f"0x{domain:04x}",
                      bus=f"0x{bus:02x}", slot=f"0x{slot:02x}", function=f"0x{function:x}")


def data_uri(libvirt_uri: str) -> str | None:
    """Where the source's QEMU sends a VM's memory and disks: the target's address in its
    libvirt URI (None: the URI names none, so libvirt picks the target's hostname)."""
    host = urlsplit(libvirt_uri).hostname
    if not host:
        return None
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
