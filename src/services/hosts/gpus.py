"""GPU inventory: discover GPUs from libvirt node devices and judge whether each can be passed through."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from src.database import gpus as gpu_dao
from src.database import partitions as partition_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.hypervisor.pci import PciDevice, slot_of
from src.services.hosts.capacity import partition_rooms
from src.services.hosts.registry import Host, HostRegistry
from src.utils.clock import utc_now
from src.vocabulary import VF_TYPE

log = logging.getLogger(__name__)


def virtual_functions(host: str, devices: list[PciDevice], by_address: dict[str, PciDevice],
                      now: str) -> list[partition_dao.PartitionRow]:
    """One offer per GPU whose SR-IOV virtual functions are enabled: how many it has, named
    after what the first of them reports itself as."""
    offers = []
    for device in devices:
        if not device.is_gpu or not device.virt_functions:
            continue
        first = by_address.get(device.virt_functions[0])
        offers.append(partition_dao.PartitionRow(
            host, device.address, VF_TYPE, first.product_name if first else None,
            len(device.virt_functions), now, kind="vf", functions=device.virt_functions))
    return offers


def assess(gpu: PciDevice, by_address: dict[str, PciDevice], now: str,
           host: str = "local") -> gpu_dao.GpuRow:
    """The inventory row for gpu: what passes through with it, and why it cannot, if it cannot.

    A group is viable only if every other member is a function of the GPU's own slot (its
    audio or USB companion, passed through with it) or a PCI bridge (which stays on the host).
    """
    members: list[dict[str, str]] = []
    functions = [gpu.address]
    reason = None if gpu.group else "no_iommu_group"  # IOMMU off: nothing can pass through
    for address in gpu.group:
        if address == gpu.address:
            continue
        device = by_address.get(address)
        class_code = f"0x{device.class_code:06x}" if device else "unknown"
        if device is not None and device.is_bridge:
            role = "bridge"
        elif slot_of(address) == gpu.slot:
            role = "companion"
            functions.append(address)
        else:
            role = "foreign"
            reason = "iommu_group_shared"
        members.append({"address": address, "class": class_code, "role": role})
    return gpu_dao.GpuRow(
        id=gpu.address, vendor_id=gpu.vendor_id, vendor_name=gpu.vendor_name,
        product_id=gpu.product_id, product_name=gpu.product_name, iommu_group=gpu.iommu_group,
        numa_node=gpu.numa_node, driver=gpu.driver, unavailable_reason=reason, refreshed_at=now,
        group_devices=members, functions=sorted(functions), host=host)


class GpuInventory:
    def __init__(self, db: Database, hosts: HostRegistry,
                 on_refresh: Callable[[Host], None] = lambda _host: None) -> None:
        self._db = db
        self._hosts = hosts
        self._on_refresh = on_refresh  # e.g. capacity re-reads the host's size

    def refresh(self, host: str | None = None) -> list[gpu_dao.GpuRow]:
        """Re-read the PCI devices of one host, or of every host that answers; allocations are
        kept. Raises: HostNotFound, HypervisorError (for the one host asked for)."""
        if host is not None:
            self.refresh_host(self._hosts.get(host))
        else:
            for each in self._hosts.all():
                if self._hosts.is_up(each.name):
                    try:
                        self.refresh_host(each)
                    except HypervisorError as exc:
                        log.warning("GPUs of host %s not refreshed: %s", each.name, exc)
        return self.list(host)

    def refresh_host(self, host: Host) -> None:
        """Raises: HypervisorError when libvirt cannot list the host's node devices."""
        self._on_refresh(host)
        devices = host.hypervisor.host.pci_devices()
        by_address = {device.address: device for device in devices}
        now = utc_now()
        # A virtual function is a partition of its physical function, never a whole GPU.
        found = [assess(device, by_address, now, host.name) for device in devices
                 if device.is_gpu and device.physical_function is None]
        with self._db.write() as conn:
            for gpu in found:
                gpu_dao.upsert(conn, gpu)
            gpu_dao.forget_absent(conn, host.name, [gpu.id for gpu in found], now)
            used = partition_dao.used_on(conn, host.name)
            partition_dao.replace_host(conn, host.name, [
                partition_dao.PartitionRow(
                    host.name, device.address, kind.id, kind.name,
                    kind.available + used.get((device.address, kind.id), 0), now)
                for device in devices if device.is_gpu for kind in device.mdev_types
                if kind.device_api in (None, "vfio-pci")]  # what a VM can be given
                + virtual_functions(host.name, devices, by_address, now))
        log.info("GPU inventory of %s: %d GPU(s), %d assignable", host.name, len(found),
                 sum(1 for gpu in found if gpu.unavailable_reason is None))

    def list(self, host: str | None = None) -> list[gpu_dao.GpuRow]:
        with self._db.read() as conn:
            return gpu_dao.list_all(conn, host)

    def partitions(self, host: str | None = None) -> Sequence[PartitionOffer]:
        """The mdev types and virtual functions every GPU offers, with how many more may be
        given now: what the scheduler would give (partition_rooms), so none on a GPU a VM holds
        whole, that holds partitions of another type, or that a reservation claims now or later;
        no VF that a VM holds or that carries an mdev."""
        with self._db.read() as conn:
            rows = partition_dao.list_all(conn, host)
            rooms = {(name, room.parent, room.type_id): room.free
                     for name, found in partition_rooms(conn, utc_now()).items()
                     for room in found}
        return [PartitionOffer(row, rooms.get((row.host, row.parent, row.type_id), 0))
                for row in rows]


@dataclass(frozen=True)
class PartitionOffer:
    row: partition_dao.PartitionRow
    available: int
