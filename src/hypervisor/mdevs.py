"""Mediated devices (GPU partitions: NVIDIA vGPU, MIG-backed vGPU) made and removed through
libvirt's node device API (virNodeDeviceCreateXML, or define + create where a driver only
persists them), never by writing sysfs by hand. This is the narrow seam the build uses: a host
whose driver cannot make mdevs (libvirt's test driver models mdev types and counts, but cannot
create them) fails here, at the one place that asks."""
from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass
from typing import Protocol
from xml.sax.saxutils import quoteattr

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection


@dataclass(frozen=True)
class MdevRequest:
    uuid: str
    parent: str  # the parent GPU's PCI address, e.g. 0000:3b:00.0
    type_id: str  # e.g. nvidia-700


def node_device_name(address: str) -> str:
    """libvirt's name of a PCI node device: 0000:3b:00.0 -> pci_0000_3b_00_0."""
    return "pci_" + address.replace(":", "_").replace(".", "_")


def mdev_xml(request: MdevRequest) -> str:
    """The node device XML that asks for one mdev of type_id on parent, with its UUID."""
    str(uuid_module.UUID(request.uuid))  # a UUID, or ValueError: nothing else reaches the XML
    return (f"<device><parent>{node_device_name(request.parent)}</parent>"
            f"<capability type='mdev'><type id={quoteattr(request.type_id)}/>"
            f"<uuid>{request.uuid}</uuid></capability></device>")


class Mdevs(Protocol):
    def create(self, request: MdevRequest) -> None: ...

    def remove(self, mdev_uuid: str) -> None: ...


class NodeDeviceMdevs:
    """Raises: HypervisorError from every call (libvirt refused, or does not answer)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def create(self, request: MdevRequest) -> None:
        xml = mdev_xml(request)

        def make(conn: libvirt.virConnect) -> None:
            try:
                conn.nodeDeviceCreateXML(xml, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                device = conn.nodeDeviceDefineXML(xml, 0)  # drivers that persist them first
                device.create()
        self._connection.call(make, libvirt_calls=2)

    def remove(self, mdev_uuid: str) -> None:
        """Stop and forget the mdev; one already gone is fine."""
        def drop(conn: libvirt.virConnect) -> None:
            for device in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV):
                if mdev_uuid in device.XMLDesc():
                    device.destroy()
                    try:
                        device.undefine()
                    except libvirt.libvirtError:
                        pass  # a transient one has nothing to undefine
        self._connection.call(drop, libvirt_calls=3)
