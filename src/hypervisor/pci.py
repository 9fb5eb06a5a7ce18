"""Read PCI devices out of libvirt node-device XML: addresses, classes, IOMMU groups, NUMA."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

GPU_CLASSES = (0x0300, 0x0302)  # VGA-compatible and 3D controllers
BRIDGE_CLASS = 0x0604  # PCI-to-PCI bridge: shares groups with what sits behind it


@dataclass(frozen=True)
class MdevType:
    """A mediated device type a PCI device offers (its mdev_types capability): an NVIDIA vGPU
    or MIG-backed vGPU profile, say."""

    id: str  # e.g. nvidia-700
    name: str | None  # e.g. NVIDIA H100-1-10C
    device_api: str | None  # vfio-pci for what a VM can take
    available: int  # availableInstances: how many more the device can make now


@dataclass(frozen=True)
class PciDevice:
    address: str  # domain:bus:slot.function, e.g. 0000:3b:00.0
    class_code: int
    vendor_id: str
    vendor_name: str | None
    product_id: str
    product_name: str | None
    iommu_group: int | None
    group: tuple[str, ...]  # every address in its IOMMU group, itself included
    numa_node: int | None
    driver: str | None
    mdev_types: tuple[MdevType, ...] = ()
    # SR-IOV: a physical function's virtual functions (its virt_functions capability), and on
    # a virtual function the physical function it belongs to (phys_function).
    virt_functions: tuple[str, ...] = ()
    physical_function: str | None = None

    @property
    def slot(self) -> str:
        return slot_of(self.address)

    @property
    def is_gpu(self) -> bool:
        return self.class_code >> 8 in GPU_CLASSES

    @property
    def is_bridge(self) -> bool:
        return self.class_code >> 8 == BRIDGE_CLASS


def format_address(domain: int, bus: int, slot: int, function: int) -> str:
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


def slot_of(address: str) -> str:
    return address.rsplit(".", 1)[0]


def split_address(address: str) -> tuple[int, int, int, int]:
    """(domain, bus, slot, function) of '0000:3b:00.0'. Raises: ValueError."""
    slot, function = address.rsplit(".", 1)
    domain, bus, device = slot.split(":")
    return int(domain, 16), int(bus, 16), int(device, 16), int(function, 16)


def _int(text: str | None) -> int:
    return int(text or "0", 0)


def _addresses(node: ET.Element | None) -> tuple[str, ...]:
    if node is None:
        return ()
    return tuple(format_address(_int(a.get("domain")), _int(a.get("bus")), _int(a.get("slot")),
                                _int(a.get("function"))) for a in node.iterfind("address"))


def parse_node_device(xml: str) -> PciDevice | None:
    """The PCI device described by a node-device XML; None for any other kind of device."""
    root = ET.fromstring(xml)
    cap = root.find("./capability[@type='pci']")
    if cap is None:
        return None
    address = format_address(_int(cap.findtext("domain")), _int(cap.findtext("bus")),
                             _int(cap.findtext("slot")), _int(cap.findtext("function")))
    vendor, product = cap.find("vendor"), cap.find("product")
    group = cap.find("iommuGroup")
    members = _addresses(group)
    physical = _addresses(cap.find("./capability[@type='phys_function']"))
    numa = cap.find("numa")
    return PciDevice(
        address=address, class_code=_int(cap.findtext("class")),
        vendor_id=vendor.get("id", "") if vendor is not None else "",
        vendor_name=(vendor.text or None) if vendor is not None else None,
        product_id=product.get("id", "") if product is not None else "",
        product_name=(product.text or None) if product is not None else None,
        iommu_group=_int(group.get("number")) if group is not None else None,
        group=members or ((address,) if group is not None else ()),
        numa_node=_int(numa.get("node")) if numa is not None and numa.get("node") else None,
        driver=root.findtext("./driver/name"),
        mdev_types=tuple(
            MdevType(id=kind.get("id", ""), name=kind.findtext("name"),
                     device_api=kind.findtext("deviceAPI"),
                     available=_int(kind.findtext("availableInstances")))
            for kind in cap.iterfind("./capability[@type='mdev_types']/type")),
        virt_functions=_addresses(cap.find("./capability[@type='virt_functions']")),
        physical_function=physical[0] if physical else None)
