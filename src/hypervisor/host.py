"""Facts about one libvirt host: CPUs, memory, NUMA cells, PCI devices, DHCP leases."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection
from src.hypervisor.domains import FAMILIES, Addresses
from src.hypervisor.pci import PciDevice, parse_node_device


class HostFacts:
    """Read-only questions about the host. Raises: HypervisorError from every call."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def resources(self) -> tuple[int, int, int]:
        """(logical CPUs, memory in MiB, NUMA nodes) of the host, from getInfo."""
        info = self.connection.call(lambda c: c.getInfo())
        return int(info[2]), int(info[1]), max(1, int(info[4]))

    def numa_cpus(self) -> dict[int, list[int]]:
        """Host CPU ids per NUMA cell from the capabilities; {} when libvirt reports no cells."""
        caps = ET.fromstring(self.connection.call(lambda c: c.getCapabilities()))
        cells: dict[int, list[int]] = {}
        for cell in caps.iterfind("./host/topology/cells/cell"):
            cells[int(cell.get("id", "0"))] = sorted(
                int(cpu.get("id", "0")) for cpu in cell.iterfind("./cpus/cpu"))
        return cells

    def pci_devices(self) -> list[PciDevice]:
        """Every PCI device the host has, parsed from its node-device XML."""
        xmls = self.connection.call(lambda c: [device.XMLDesc() for device in c.listAllDevices(
            libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)])
        return [device for xml in xmls if (device := parse_node_device(xml)) is not None]

    def dhcp_leases(self, network: str) -> Addresses:
        """Current DHCP leases of a libvirt network by MAC; {} when the driver keeps none."""
        def leases(conn: libvirt.virConnect) -> list[dict[str, object]]:
            try:
                found: list[dict[str, object]] = conn.networkLookupByName(network).DHCPLeases()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_NETWORK):
                    return []
                raise
            return found
        found: Addresses = {}
        for lease in self.connection.call(leases, libvirt_calls=2):
            found.setdefault(str(lease["mac"]).lower(), []).append(
                (str(lease["ipaddr"]), FAMILIES.get(lease["type"], "unknown")))
        return found
