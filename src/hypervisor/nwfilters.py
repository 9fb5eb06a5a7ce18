"""libvirt's network filters (nwfilter) on one host: define, read and remove by name. libvirt
applies a redefined filter to the running NICs that reference it at once."""
from __future__ import annotations

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection
from src.hypervisor.errors import HypervisorError


class FiltersUnsupported(HypervisorError):
    """The host's libvirt has no nwfilter driver (libvirt's test driver). A QEMU domain whose
    NIC names a filter does not start without one, so nothing runs unfiltered."""


class Filters:
    """Raises: HypervisorError from every call (libvirt refused, or does not answer)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def define(self, xml: str) -> None:
        """Define or replace a filter. Raises: FiltersUnsupported, HypervisorError."""
        def put(conn: libvirt.virConnect) -> None:
            try:
                conn.nwfilterDefineXML(xml)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    raise FiltersUnsupported(str(exc), "no nwfilter driver") from exc
                raise
        self._connection.call(put)

    def xml_of(self, name: str) -> str | None:
        """The filter's XML as libvirt holds it, or None when there is none (or no driver)."""
        def read(conn: libvirt.virConnect) -> str | None:
            try:
                return str(conn.nwfilterLookupByName(name).XMLDesc(0))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_NWFILTER,
                                            libvirt.VIR_ERR_NO_SUPPORT):
                    return None
                raise
        return self._connection.call(read, libvirt_calls=2)

    def undefine(self, name: str) -> None:
        """Remove the filter; one already gone (or no driver) is fine."""
        def drop(conn: libvirt.virConnect) -> None:
            try:
                conn.nwfilterLookupByName(name).undefine()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_NWFILTER,
                                                libvirt.VIR_ERR_NO_SUPPORT):
                    raise
        self._connection.call(drop, libvirt_calls=2)
