"""Domain operations on one libvirt host: define, power, state, XML, disks, addresses,
statistics."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection, is_missing
from src.hypervisor.errors import HypervisorError
from src.hypervisor.hotplug import DiskTarget, disk_element, disk_targets, unplug_live

POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting_down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
MISSING = "missing"
HALTED = "paused_by_hypervisor"  # paused, but not because anyone asked
# Why a paused domain is paused: only these mean somebody (or a passing operation) paused it.
_ASKED_PAUSES = {getattr(libvirt, f"VIR_DOMAIN_PAUSED_{name}") for name in (
    "USER", "MIGRATION", "SAVE", "DUMP", "SNAPSHOT", "SHUTTING_DOWN", "STARTING_UP",
    "FROM_SNAPSHOT", "POSTCOPY") if hasattr(libvirt, f"VIR_DOMAIN_PAUSED_{name}")}
PAUSE_REASONS: dict[int, str] = {value: name[len("VIR_DOMAIN_PAUSED_"):].lower() for name, value in
                 vars(libvirt).items() if name.startswith("VIR_DOMAIN_PAUSED_")
                 and name != "VIR_DOMAIN_PAUSED_LAST" and isinstance(value, int)}
# The test driver refuses NVRAM/checkpoint flags; our domains have neither.
_UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                   | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
_NOT_OURS = {libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN}
FAMILIES = {libvirt.VIR_IP_ADDR_TYPE_IPV4: "ipv4", libvirt.VIR_IP_ADDR_TYPE_IPV6: "ipv6"}
_ADDRESS_SOURCES = {"agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
                    "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP}
_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
          | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_BLOCK
          | libvirt.VIR_DOMAIN_STATS_INTERFACE)

# (address, family) pairs keyed by MAC.
Addresses = dict[str, list[tuple[str, str]]]


def state_name(state: int, reason: int) -> str:
    """The power state libvirt reports, as the platform names it (HALTED: paused unasked)."""
    if state == libvirt.VIR_DOMAIN_PAUSED and reason not in _ASKED_PAUSES:
        return HALTED
    return POWER_STATES.get(state, "unknown")


def destroy_if_running(domain: libvirt.virDomain,
                       destroy: Callable[[], object] | None = None) -> None:
    """Power the domain off; one that is off already is fine.

    libvirt says "domain is not running" (VIR_ERR_OPERATION_INVALID) for a domain that was off
    already or stopped during the destroy, but that code names other refusals too: it passes
    only when the domain is indeed off afterwards. destroy is the call that powers it off
    (domain.destroy; a seam for tests).

    Raises: libvirtError for any other failure, and for that one with the domain still active.
    """
    try:
        (destroy or domain.destroy)()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or _still_active(domain):
            raise


def _still_active(domain: libvirt.virDomain) -> bool:
    try:
        return bool(domain.isActive())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False  # a transient domain is gone once it is off
        raise


def _addresses(interfaces: dict[str, Any]) -> Addresses:
    found: Addresses = {}
    for interface in interfaces.values():
        mac = (interface.get("hwaddr") or "").lower()
        for address in interface.get("addrs") or []:
            found.setdefault(mac, []).append(
                (address["addr"], FAMILIES.get(address["type"], "unknown")))
    return found


class Domains:
    """What the platform asks of libvirt about its domains. Raises: HypervisorError (and its
    DomainNotFound / HypervisorUnavailable) from every call."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def define(self, xml: str) -> None:
        """Define a persistent domain, validated against libvirt's schema."""
        self.connection.call(lambda c: c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE))

    def start(self, uuid: str) -> None:
        self.connection.on_domain(uuid, lambda d: d.create())

    def shutdown(self, uuid: str) -> None:
        """Ask the guest to power off (ACPI power button, or the guest agent when it runs)."""
        self.connection.on_domain(uuid, lambda d: d.shutdown())

    def reboot(self, uuid: str) -> None:
        """Ask the guest to reboot (ACPI, or the guest agent when it runs)."""
        self.connection.on_domain(uuid, lambda d: d.reboot(0))

    def reset(self, uuid: str) -> None:
        """Hard reset, like the reset button."""
        self.connection.on_domain(uuid, lambda d: d.reset(0))

    def suspend(self, uuid: str) -> None:
        self.connection.on_domain(uuid, lambda d: d.suspend())

    def resume(self, uuid: str) -> None:
        self.connection.on_domain(uuid, lambda d: d.resume())

    def set_autostart(self, uuid: str, enabled: bool) -> None:
        """Start the domain with libvirtd (host boot) or not."""
        self.connection.on_domain(uuid, lambda d: d.setAutostart(int(enabled)))

    def autostart(self, uuid: str) -> bool:
        return self.connection.on_domain(uuid, lambda d: bool(d.autostart()))

    def force_off(self, uuid: str) -> None:
        """Hard power-off if running; a missing or stopped domain is fine."""
        self.connection.on_domain(uuid, destroy_if_running, missing=None)

    def undefine(self, uuid: str) -> None:
        """Remove the definition; a missing domain is fine."""
        self.connection.on_domain(uuid, lambda d: d.undefineFlags(_UNDEFINE_FLAGS), missing=None)

    def power_state(self, uuid: str) -> str:
        """One domain's live state, or 'missing'."""
        return self.connection.on_domain(uuid, lambda d: state_name(*d.state()),
                                         missing=MISSING)

    def power_states(self) -> dict[str, str]:
        """Live state of every domain by UUID, in one libvirt call."""
        stats = self.connection.call(
            lambda c: c.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE))
        return {domain.UUIDString(): state_name(values.get("state.state", -1),
                                                 values.get("state.reason", 0))
                for domain, values in stats}

    def pause_reason(self, uuid: str) -> str:
        """Why libvirt says the domain is paused (ioerror, crashed, unknown, ...)."""
        reason: int = self.connection.on_domain(uuid, lambda d: d.state()[1])
        return PAUSE_REASONS.get(reason, "unknown")

    def domain_xml(self, uuid: str) -> str:
        """The live (or inactive) XML libvirt holds for the domain. Raises: DomainNotFound."""
        xml: str = self.connection.on_domain(uuid, lambda d: d.XMLDesc(0))
        return xml

    def disk_targets(self, uuid: str, live: bool) -> list[DiskTarget]:
        """The disks the domain's live definition (live; a stopped domain's is its persistent
        one) or its persistent one holds, in order.

        Raises: DomainNotFound.
        """
        flags = 0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE
        return disk_targets(self.connection.on_domain(uuid, lambda d: d.XMLDesc(flags)))

    def attach_disk(self, uuid: str, device_xml: str, live: bool) -> None:
        """Plug a <disk> into the domain: into the running guest and the persistent definition
        when live, into the persistent definition only otherwise (the guest has it from its
        next start).

        Raises: DomainNotFound, HypervisorError (libvirt's reason: the target is taken, the
        domain does not run though live was asked, no free PCI slot, ...).
        """
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        self.connection.on_domain(uuid, lambda d: d.attachDeviceFlags(device_xml, flags))

    def detach_disk(self, uuid: str, target_dev: str, live: bool, timeout_s: float) -> None:
        """Unplug the disk at target_dev; a disk the domain does not hold is fine.

        With live (and the domain running) the guest is asked to let go and the call waits
        until the disk has left the live definition, for at most timeout_s; only then is it
        dropped from the persistent definition too. Otherwise it leaves the persistent
        definition only.

        Raises: DeviceNotReleased when the guest kept the disk (it stays in both definitions,
        as it really is), DomainNotFound, HypervisorError.
        """
        def detach(domain: libvirt.virDomain) -> None:
            if live and domain.isActive():
                self.connection.count(unplug_live(domain, target_dev, timeout_s))
            persistent = disk_element(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
                                       target_dev)
            if persistent is not None:
                domain.detachDeviceFlags(ET.tostring(persistent, encoding="unicode"),
                                         libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        self.connection.on_domain(uuid, detach)

    def set_disk_source(self, uuid: str, target_dev: str, path: str) -> None:
        """Point the persistent definition's disk at target_dev to the file path (a running
        guest keeps the file it has open until it stops).

        Raises: DomainNotFound, HypervisorError (also when the definition has no such disk).
        """
        def update(domain: libvirt.virDomain) -> None:
            disk = disk_element(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target_dev)
            source = disk.find("source") if disk is not None else None
            if disk is None or source is None:
                raise HypervisorError(f"the domain's definition has no disk {target_dev}")
            disk.set("type", "file")
            source.attrib.clear()
            source.set("file", path)
            domain.updateDeviceFlags(ET.tostring(disk, encoding="unicode"),
                                     libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        self.connection.on_domain(uuid, update)

    def vnc_port(self, uuid: str) -> int | None:
        """The VNC port QEMU was given (autoport), or None when it has none."""
        graphics = ET.fromstring(self.domain_xml(uuid)).find("./devices/graphics[@type='vnc']")
        port = int(graphics.get("port", "-1")) if graphics is not None else -1
        return port if port > 0 else None

    def tagged(self, namespace: str, tag: str, value: str) -> list[tuple[str, str]]:
        """(uuid, name) of every domain whose metadata in namespace has <tag>value</tag>."""
        def scan(conn: libvirt.virConnect) -> list[tuple[str, str]]:
            found = []
            domains = conn.listAllDomains()
            self.connection.count(len(domains))
            for domain in domains:
                try:
                    metadata = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() in _NOT_OURS:
                        continue  # no metadata of ours, or gone meanwhile: not our domain
                    raise
                element = ET.fromstring(metadata).find(tag)
                if element is not None and element.text == value:
                    found.append((domain.UUIDString(), domain.name()))
            return found
        return self.connection.call(scan)

    def interface_addresses(self, uuid: str, source: str) -> Addresses:
        """Addresses the guest agent or the host's ARP table knows; {} when that source has none.

        Raises: DomainNotFound.
        """
        def ask(domain: libvirt.virDomain) -> Addresses:
            try:
                return _addresses(domain.interfaceAddresses(_ADDRESS_SOURCES[source]))
            except libvirt.libvirtError as exc:
                if is_missing(exc):
                    raise
                return {}  # no agent in the guest, unsupported source, or nothing learned yet
        return self.connection.on_domain(uuid, ask)

    def stats(self, uuid: str) -> dict[str, Any]:
        """Raw bulk statistics of one domain (cpu.time, balloon.*, block.N.*, net.N.*)."""
        def sample(domain: libvirt.virDomain) -> dict[str, Any]:
            records = domain.connect().domainListGetStats([domain], _STATS)
            return dict(records[0][1]) if records else {}
        return self.connection.on_domain(uuid, sample)
