"""libvirt networks of one host: what each is (mode, subnet, bridge), whether it runs, and
defining, starting and removing one."""
from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection

# libvirt's forward modes that hand the guest straight to a host interface (a bridge, macvtap
# or a passed-through function): all of them are listed as "bridge".
_DIRECT = ("bridge", "private", "vepa", "passthrough", "hostdev")


@dataclass(frozen=True)
class NetworkFacts:
    """A network as its host's libvirt holds it."""

    name: str
    mode: str  # nat, isolated, bridge, route or open
    subnet: str | None  # the first IPv4 subnet, as a CIDR
    bridge: str | None
    active: bool


@dataclass(frozen=True)
class NetworkSpec:
    """A network to define: isolated and nat ones get subnet with DHCP, bridge ones attach to
    an existing host bridge. Raises: ValueError when the parts do not fit the mode."""

    name: str
    mode: str  # isolated, nat or bridge
    subnet: str | None = None
    bridge: str | None = None

    def __post_init__(self) -> None:
        if self.mode == "bridge" and (self.bridge is None or self.subnet is not None):
            raise ValueError("a bridge network names a bridge and no subnet")
        if self.mode in ("isolated", "nat"):
            if self.subnet is None or self.bridge is not None:
                raise ValueError(f"a {self.mode} network takes a subnet and no bridge")
            net = ipaddress.IPv4Network(self.subnet)  # ValueError for host bits set
            if not 8 <= net.prefixlen <= 30:
                raise ValueError(f"subnet {net} is not a /8 to /30")


def facts_of(xml: str, active: bool) -> NetworkFacts:
    """What a network's XML says it is."""
    root = ET.fromstring(xml)
    forward = root.find("forward")
    mode = "isolated" if forward is None else forward.get("mode", "nat")
    bridge = root.find("bridge")
    return NetworkFacts(name=root.findtext("name", ""),
                        mode="bridge" if mode in _DIRECT else mode,
                        subnet=_subnet(root), bridge=None if bridge is None else bridge.get("name"),
                        active=active)


def _subnet(root: ET.Element) -> str | None:
    for ip in root.iterfind("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        mask = ip.get("prefix") or ip.get("netmask") or "24"
        try:
            return str(ipaddress.ip_interface(f"{ip.get('address')}/{mask}").network)
        except ValueError:
            continue
    return None


def network_xml(spec: NetworkSpec) -> str:
    """The definition of spec, built as a tree (no value is ever markup). The gateway is the
    subnet's first address and DHCP hands out the rest."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = spec.name
    if spec.mode == "bridge":
        ET.SubElement(root, "forward", mode="bridge")
        ET.SubElement(root, "bridge", name=str(spec.bridge))
        return ET.tostring(root, encoding="unicode")
    if spec.mode == "nat":
        ET.SubElement(root, "forward", mode="nat")
    net = ipaddress.IPv4Network(spec.subnet)
    hosts = list(_ends(net))
    ip = ET.SubElement(root, "ip", address=str(hosts[0]), netmask=str(net.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(hosts[1]), end=str(hosts[2]))
    return ET.tostring(root, encoding="unicode")


def _ends(net: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address, ...]:
    """(gateway, first lease, last lease) of net. Raises: ValueError when it has no room."""
    if net.num_addresses < 4:
        raise ValueError(f"{net} has no room for a gateway and a DHCP range")
    first = net.network_address + 1
    return first, first + 1, net.broadcast_address - 1


class Networks:
    """Raises: HypervisorError from every call."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def state(self, name: str) -> str:
        """'active', 'inactive' or 'missing'."""
        def look(conn: libvirt.virConnect) -> str:
            try:
                network = conn.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return "missing"
                raise
            return "active" if network.isActive() else "inactive"
        return self.connection.call(look, libvirt_calls=2)

    def active_names(self) -> set[str]:
        """The names of the networks that run now, in one call."""
        return set(self.connection.call(lambda c: [
            network.name() for network in
            c.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]))

    def list_all(self) -> list[NetworkFacts]:
        """Every network the host's libvirt has, by name."""
        def read(conn: libvirt.virConnect) -> list[NetworkFacts]:
            found = conn.listAllNetworks(0)
            self.connection.count(2 * len(found))  # isActive and XMLDesc of each
            return sorted((facts_of(network.XMLDesc(0), bool(network.isActive()))
                           for network in found), key=lambda facts: facts.name)
        return self.connection.call(read)

    def define(self, xml: str) -> None:
        """Define a persistent network (not started)."""
        self.connection.call(lambda c: c.networkDefineXML(xml))

    def start(self, name: str) -> None:
        """Start the network now and whenever libvirtd starts."""
        def start(conn: libvirt.virConnect) -> None:
            network = conn.networkLookupByName(name)
            if not network.isActive():
                network.create()
            network.setAutostart(1)
        self.connection.call(start, libvirt_calls=3)

    def remove(self, name: str) -> None:
        """Stop and undefine the network; one that is missing already is fine."""
        def remove(conn: libvirt.virConnect) -> None:
            try:
                network = conn.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return
                raise
            if network.isActive():
                network.destroy()
            network.undefine()
        self.connection.call(remove, libvirt_calls=4)
