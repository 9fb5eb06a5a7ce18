"""Facts about one libvirt host: CPUs, memory, NUMA cells, PCI devices, DHCP leases, neighbours."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection
from src.hypervisor.domains import FAMILIES, Addresses
from src.hypervisor.pci import PciDevice, parse_node_device

ARP_TABLE = Path("/proc/net/arp")
_ARP_COMPLETE = 0x2  # ATF_COM: the entry holds a resolved hardware address
_NO_MAC = "00:00:00:00:00:00"


def is_local(uri: str) -> bool:
    """Whether the URI names a libvirt on this machine (qemu:///system, qemu:///session,
    test:///path): no host part and no remote transport, so this machine's tables are its."""
    scheme, _, rest = uri.partition("://")
    transport = scheme.partition("+")[2]
    return rest.startswith("/") and transport in ("", "unix")


def parse_arp_table(text: str) -> Addresses:
    """IPv4 neighbours by MAC from /proc/net/arp's text; incomplete entries are left out."""
    found: Addresses = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        address, flags, mac = fields[0], fields[2], fields[3].lower()
        try:
            complete = int(flags, 16) & _ARP_COMPLETE
        except ValueError:
            continue
        if complete and mac != _NO_MAC:
            found.setdefault(mac, []).append((address, "ipv4"))
    return found


class HostFacts:
    """Read-only questions about the host. Raises: HypervisorError from every call."""

    def __init__(self, connection: Connection, arp_table: Path = ARP_TABLE) -> None:
        self.connection = connection
        self.arp_table = arp_table

    def neighbours(self) -> Addresses | None:
        """The host's IPv4 neighbours by MAC, read from its ARP table without a libvirt call;
        None when libvirt is remote (this machine's table is not the host's)."""
        if not is_local(self.connection.uri):
            return None
        try:
            return parse_arp_table(self.arp_table.read_text())
        except OSError:
            return {}  # no procfs here: nothing learned, as when the table is empty

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
