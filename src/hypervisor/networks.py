"""libvirt networks of one host: whether one exists and runs, and starting it."""
from __future__ import annotations

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection


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
