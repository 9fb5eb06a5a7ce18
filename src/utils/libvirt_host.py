"""The only module that imports libvirt: one shared connection, domain calls, error translation."""
from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
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
_UNREACHABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC}


class HypervisorError(RuntimeError):
    """A libvirt call failed; message is libvirt's own text."""


class DomainNotFound(HypervisorError):
    """No domain with that UUID or name."""


class HypervisorUnavailable(HypervisorError):
    """The libvirt daemon cannot be reached."""


def _silence_libvirt_stderr(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we log them where they are handled."""


libvirt.registerErrorHandler(_silence_libvirt_stderr, None)


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
        self.uri = uri
        self.calls = 0  # libvirt API calls made, read by benchmarks and tests
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                with _translated(connecting=True):
                    self._conn = libvirt.open(self.uri)
            return self._conn

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
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
