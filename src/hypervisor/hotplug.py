"""Disks of a domain definition, and unplugging one from a running guest with a deadline."""
from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.errors import DeviceNotReleased

POLL_S = 0.5  # the live definition is read again at least this often while the guest decides


@dataclass(frozen=True)
class DiskTarget:
    """One <disk> of a domain definition."""

    target_dev: str  # vda, vdc, ...
    source: str | None  # the file (or block device) behind it; None for an empty drive
    read_only: bool
    shareable: bool
    serial: str | None
    alias: str | None = None  # QEMU's device id, in a running domain's live definition only


def disk_element(xml: str, target_dev: str) -> ET.Element | None:
    """The <disk> of the definition xml at target_dev, or None."""
    for disk in ET.fromstring(xml).iterfind("./devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == target_dev:
            return disk
    return None


def disk_targets(xml: str) -> list[DiskTarget]:
    """The disks of a domain definition, in order."""
    disks = []
    for disk in ET.fromstring(xml).iterfind("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        alias = disk.find("alias")
        disks.append(DiskTarget(
            target_dev=target.get("dev", "") if target is not None else "",
            source=None if source is None else source.get("file") or source.get("dev"),
            read_only=disk.find("readonly") is not None,
            shareable=disk.find("shareable") is not None,
            serial=disk.findtext("serial"),
            alias=None if alias is None else alias.get("name")))
    return disks


def unplug_live(domain: libvirt.virDomain, target_dev: str, timeout_s: float) -> int:
    """Ask the running guest to let go of the disk at target_dev and wait until it has left the
    live definition (libvirt's device-removed event, or a read of the definition at least every
    POLL_S); the libvirt calls made. A disk the live definition lacks is fine.

    libvirt's detachDeviceAlias only sends the request (detachDeviceFlags would itself wait
    5 s), so the wait is ours and ends at timeout_s, whatever libvirt's own timeout is.

    Raises: DeviceNotReleased when the guest refused or kept the disk past timeout_s.
    """
    live = disk_element(domain.XMLDesc(0), target_dev)
    alias = None if live is None else live.find("alias")
    if live is None:
        return 1
    if alias is None or not alias.get("name"):
        raise DeviceNotReleased(f"{target_dev} has no device alias in the live definition")
    name = alias.get("name")
    conn = domain.connect()
    settled, refused = threading.Event(), threading.Event()

    def removed(_conn: object, _domain: object, device: str, _opaque: object) -> None:
        if device == name:
            settled.set()

    def failed(_conn: object, _domain: object, device: str, _opaque: object) -> None:
        if device == name:
            refused.set()
            settled.set()
    callbacks = [
        conn.domainEventRegisterAny(domain, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                    removed, None),
        conn.domainEventRegisterAny(domain, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED,
                                    failed, None)]
    calls = 4
    try:
        domain.detachDeviceAlias(name, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        deadline = time.monotonic() + timeout_s
        while True:
            calls += 1
            if disk_element(domain.XMLDesc(0), target_dev) is None:
                return calls
            if refused.is_set():
                raise DeviceNotReleased(f"the guest refused to release {target_dev}; it is "
                                        "still attached")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceNotReleased(
                    f"the guest did not release {target_dev} within {timeout_s:g} s; it is "
                    "still in the running domain and its definition (the unplug request stays "
                    "pending: the guest may still let go later)")
            settled.wait(min(remaining, POLL_S))
            settled.clear()
    finally:
        for callback in callbacks:
            try:
                conn.domainEventDeregisterAny(callback)
            except libvirt.libvirtError:
                pass  # the connection died meanwhile: its callbacks went with it
