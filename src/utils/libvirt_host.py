"""The only module that imports libvirt: one shared connection, domain calls, error translation."""
from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

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
# The test driver refuses NVRAM/checkpoint flags; our domains have neither.
_UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                   | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
_NOT_OURS = {libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN}
_UNREACHABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_SYSTEM_ERROR}
# What a lifecycle event says happened, as the reconciler reads it.
LIFECYCLE_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
_FAMILIES = {libvirt.VIR_IP_ADDR_TYPE_IPV4: "ipv4", libvirt.VIR_IP_ADDR_TYPE_IPV6: "ipv6"}
_ADDRESS_SOURCES = {"agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
                    "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP}
_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
          | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_BLOCK
          | libvirt.VIR_DOMAIN_STATS_INTERFACE)
KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 3  # a silent daemon is dropped after about 20 s
MAX_BACKOFF_S = 8.0  # reconnect attempts never wait longer, so recovery stays well under 30 s

# (mac, address, family) tuples keyed by MAC.
Addresses = dict[str, list[tuple[str, str]]]
LifecycleListener = Callable[[str, str], None]


class HypervisorError(RuntimeError):
    """A libvirt call failed; message is libvirt's own text."""


class DomainNotFound(HypervisorError):
    """No domain with that UUID or name."""


class HypervisorUnavailable(HypervisorError):
    """The libvirt daemon cannot be reached."""


def _silence_libvirt_stderr(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we log them where they are handled."""


libvirt.registerErrorHandler(_silence_libvirt_stderr, None)

_event_loop_guard = threading.Lock()
_event_loop_running = False


def _ensure_event_loop() -> None:
    """Run libvirt's default event loop on one daemon thread: events and keepalive need it.

    It must be registered before the first connection is opened, so every Hypervisor calls this.
    """
    global _event_loop_running
    with _event_loop_guard:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_running = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


@contextmanager
def _translated(connecting: bool = False) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainNotFound(str(exc)) from exc
        if connecting or code in _UNREACHABLE:
            raise HypervisorUnavailable(str(exc)) from exc
        raise HypervisorError(str(exc)) from exc


class Hypervisor:
    """Domain operations on one libvirt URI; safe to share between threads."""

    def __init__(self, uri: str) -> None:
        _ensure_event_loop()
        self.uri = uri
        self.calls = 0  # libvirt API calls made, read by benchmarks and tests
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._last_failure = ""
        self._listener: LifecycleListener | None = None
        self._on_connect: Callable[[], None] | None = None
        self._callback_id = -1
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()

    def _connection(self) -> libvirt.virConnect:
        """The live connection, reopened when it died; failures back off instead of hanging.

        Raises: HypervisorUnavailable while libvirtd cannot be reached.
        """
        with self._lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            if self._closed.is_set():
                raise HypervisorUnavailable("the connection was closed")
            now = time.monotonic()
            if now < self._retry_at:
                raise HypervisorUnavailable(f"reconnecting ({self._last_failure})")
            self._drop_dead_connection()
            try:
                with _translated(connecting=True):
                    conn = libvirt.open(self.uri)
            except HypervisorUnavailable as exc:
                self._backoff_s = min(max(self._backoff_s * 2, 0.5), MAX_BACKOFF_S)
                self._retry_at = now + self._backoff_s
                self._last_failure = str(exc)
                raise
            if self._backoff_s:
                log.warning("libvirt connection to %s re-established", self.uri)
            self._backoff_s = 0.0
            self._conn = conn
            self._prepare(conn)
            on_connect = self._on_connect
        if on_connect is not None:
            on_connect()
        return conn

    def _prepare(self, conn: libvirt.virConnect) -> None:
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass  # local drivers (test:///) have no keepalive; nothing to keep alive
        if self._listener is not None:
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_event, None)

    def _drop_dead_connection(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass  # it is dead already; closing only frees our side
        self._conn = None

    def _lifecycle_event(self, _conn: Any, domain: Any, event: int, _detail: int,
                         _opaque: Any) -> None:
        listener = self._listener
        if listener is not None:
            listener(domain.UUIDString(), LIFECYCLE_EVENTS.get(event, "unknown"))

    def watch(self, listener: LifecycleListener, on_connect: Callable[[], None]) -> None:
        """Deliver (uuid, event) for every domain lifecycle event, on every (re)connection.

        on_connect runs after each successful (re)connection, so the caller can catch up on
        what happened while events could not arrive. A watchdog thread reconnects with backoff.
        Both callbacks run on libvirt's threads: they must only queue work, never block.
        """
        with self._lock:
            self._listener = listener
            self._on_connect = on_connect
            if self._conn is not None and self._conn.isAlive():
                self._prepare(self._conn)
        self._watchdog = threading.Thread(target=self._keep_connected, name="libvirt-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def _keep_connected(self) -> None:
        while not self._closed.wait(1.0):
            try:
                self._connection()
            except HypervisorUnavailable:
                continue  # _connection recorded the failure and the next attempt time

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and bool(conn.isAlive())

    def _domain(self, uuid: str) -> libvirt.virDomain:
        self.calls += 1
        return self._connection().lookupByUUIDString(uuid)

    def _domain_if_any(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self._domain(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def close(self) -> None:
        self._closed.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        with self._lock:
            if self._conn is not None and self._callback_id >= 0:
                try:
                    self._conn.domainEventDeregisterAny(self._callback_id)
                except libvirt.libvirtError:
                    pass  # a dead connection has no callbacks left to remove
            self._listener = None
            self._drop_dead_connection()

    def ping(self) -> None:
        """Raises: HypervisorError when libvirt does not answer."""
        with _translated():
            self.calls += 1
            self._connection().getLibVersion()

    def define(self, xml: str) -> None:
        """Define a persistent domain, validated against libvirt's schema.

        Raises: HypervisorError when libvirt rejects the XML.
        """
        with _translated():
            self.calls += 1
            self._connection().defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)

    def start(self, uuid: str) -> None:
        """Raises: DomainNotFound, HypervisorError."""
        with _translated():
            self.calls += 1
            self._domain(uuid).create()

    def _on_domain(self, uuid: str, call: Callable[[libvirt.virDomain], object]) -> None:
        """Run one call on the domain. Raises: DomainNotFound, HypervisorError."""
        with _translated():
            domain = self._domain(uuid)
            self.calls += 1
            call(domain)

    def shutdown(self, uuid: str) -> None:
        """Ask the guest to power off (ACPI power button, or the guest agent when it runs)."""
        self._on_domain(uuid, lambda domain: domain.shutdown())

    def reboot(self, uuid: str) -> None:
        """Ask the guest to reboot (ACPI, or the guest agent when it runs)."""
        self._on_domain(uuid, lambda domain: domain.reboot(0))

    def reset(self, uuid: str) -> None:
        """Hard reset, like the reset button."""
        self._on_domain(uuid, lambda domain: domain.reset(0))

    def suspend(self, uuid: str) -> None:
        self._on_domain(uuid, lambda domain: domain.suspend())

    def resume(self, uuid: str) -> None:
        self._on_domain(uuid, lambda domain: domain.resume())

    def set_autostart(self, uuid: str, enabled: bool) -> None:
        """Start the domain with libvirtd (host boot) or not."""
        self._on_domain(uuid, lambda domain: domain.setAutostart(int(enabled)))

    def autostart(self, uuid: str) -> bool:
        with _translated():
            domain = self._domain(uuid)
            self.calls += 1
            return bool(domain.autostart())

    def force_off(self, uuid: str) -> None:
        """Hard power-off if running; a missing or stopped domain is fine."""
        with _translated():
            domain = self._domain_if_any(uuid)
            if domain is None:
                return
            self.calls += 1
            try:
                domain.destroy()
            except libvirt.libvirtError as exc:
                # Already off (or it powered itself off just now): nothing to do.
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise

    def undefine(self, uuid: str) -> None:
        """Remove the definition; a missing domain is fine."""
        with _translated():
            domain = self._domain_if_any(uuid)
            if domain is None:
                return
            self.calls += 1
            domain.undefineFlags(_UNDEFINE_FLAGS)

    def name_taken(self, name: str) -> bool:
        with _translated():
            self.calls += 1
            try:
                self._connection().lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise
            return True

    def power_state(self, uuid: str) -> str:
        """One domain's live state, or 'missing'."""
        with _translated():
            try:
                domain = self._domain(uuid)
                self.calls += 1
                state = domain.state()[0]
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return MISSING
                raise
            return POWER_STATES.get(state, "unknown")

    def power_states(self) -> dict[str, str]:
        """Live state of every domain by UUID, in one libvirt call."""
        with _translated():
            self.calls += 1
            stats = self._connection().getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
        return {domain.UUIDString(): POWER_STATES.get(values.get("state.state", -1), "unknown")
                for domain, values in stats}

    def domain_xml(self, uuid: str) -> str:
        """The live (or inactive) XML libvirt holds for the domain. Raises: DomainNotFound."""
        with _translated():
            domain = self._domain(uuid)
            self.calls += 1
            xml: str = domain.XMLDesc(0)
        return xml

    def vnc_port(self, uuid: str) -> int | None:
        """The VNC port QEMU was given (autoport), or None when it has none."""
        graphics = ET.fromstring(self.domain_xml(uuid)).find("./devices/graphics[@type='vnc']")
        port = int(graphics.get("port", "-1")) if graphics is not None else -1
        return port if port > 0 else None

    def domains_tagged(self, namespace: str, tag: str, value: str) -> list[tuple[str, str]]:
        """(uuid, name) of every domain whose metadata in namespace has <tag>value</tag>."""
        found = []
        with _translated():
            self.calls += 1
            domains = self._connection().listAllDomains()
            for domain in domains:
                self.calls += 1
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

    def dhcp_leases(self, network: str) -> Addresses:
        """Current DHCP leases of a libvirt network by MAC; {} when the driver keeps none."""
        with _translated():
            self.calls += 2
            try:
                leases = self._connection().networkLookupByName(network).DHCPLeases()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT,
                                            libvirt.VIR_ERR_NO_NETWORK):
                    return {}
                raise
        found: Addresses = {}
        for lease in leases:
            found.setdefault(lease["mac"].lower(), []).append(
                (lease["ipaddr"], _FAMILIES.get(lease["type"], "unknown")))
        return found

    def interface_addresses(self, uuid: str, source: str) -> Addresses:
        """Addresses the guest agent or the host's ARP table knows; {} when that source has none."""
        with _translated():
            try:
                domain = self._domain(uuid)
                self.calls += 1
                interfaces = domain.interfaceAddresses(_ADDRESS_SOURCES[source])
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                return {}  # no agent in the guest, unsupported source, or nothing learned yet
        found: Addresses = {}
        for interface in interfaces.values():
            mac = (interface.get("hwaddr") or "").lower()
            for address in interface.get("addrs") or []:
                found.setdefault(mac, []).append(
                    (address["addr"], _FAMILIES.get(address["type"], "unknown")))
        return found

    def stats(self, uuid: str) -> dict[str, Any]:
        """Raw bulk statistics of one domain (cpu.time, balloon.*, block.N.*, net.N.*)."""
        with _translated():
            domain = self._domain(uuid)
            self.calls += 1
            records = self._connection().domainListGetStats([domain], _STATS)
        return dict(records[0][1]) if records else {}

    def host_resources(self) -> tuple[int, int, int]:
        """(logical CPUs, memory in MiB, NUMA nodes) of the host, from getInfo."""
        with _translated():
            self.calls += 1
            info = self._connection().getInfo()
        return int(info[2]), int(info[1]), max(1, int(info[4]))

    def numa_cpus(self) -> dict[int, list[int]]:
        """Host CPU ids per NUMA cell from the capabilities; {} when libvirt reports no cells."""
        with _translated():
            self.calls += 1
            caps = ET.fromstring(self._connection().getCapabilities())
        cells: dict[int, list[int]] = {}
        for cell in caps.iterfind("./host/topology/cells/cell"):
            cells[int(cell.get("id", "0"))] = sorted(
                int(cpu.get("id", "0")) for cpu in cell.iterfind("./cpus/cpu"))
        return cells

    def pci_device_xmls(self) -> list[str]:
        """The node-device XML of every PCI device the host has."""
        with _translated():
            self.calls += 1
            devices = self._connection().listAllDevices(
                libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
            return [device.XMLDesc() for device in devices]
