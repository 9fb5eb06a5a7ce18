"""Build and tear down one VM on its host: disks, XML, define, start, each step with its undo."""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace

from src.config import Config
from src.database import partitions as partition_dao
from src.database.db import Database
from src.hypervisor.disks import QemuImg
from src.hypervisor.domain_xml import DiskSpec, DomainSpec, NicSpec, render_domain
from src.hypervisor.errors import HypervisorError
from src.hypervisor.mdevs import MdevRequest
from src.hypervisor.pci import split_address
from src.services.hosts.registry import Host
from src.services.security.firewall import Firewall
from src.services.tasks.steps import best_effort, step
from src.services.vms.build_record import BuildRecord
from src.services.vms.disks import GIB, Disks, Placed, PoolDisks, SharedDisks
from src.services.volumes.layers import FORMAT, VolumeLayers, serial_of

__all__ = ["GIB", "Provisioner", "cpu_list"]
log = logging.getLogger(__name__)


class Provisioner:
    """Turns a build record into a running domain on its host, or leaves nothing behind."""

    def __init__(self, config: Config, db: Database, qemu_img: QemuImg,
                 installation_id: str, layers: VolumeLayers) -> None:
        self._db = db
        self._layers = layers
        self._installation_id = installation_id
        self.shared = SharedDisks(config, qemu_img, installation_id)
        self.firewall = Firewall(db)  # each VM's nwfilter (its security groups)

    def disks(self, host: Host) -> Disks:
        return PoolDisks(self._db, host) if host.row.storage == "pool" else self.shared

    def build(self, record: BuildRecord, host: Host,
              on_running: Callable[[int | None], None]) -> None:
        """Create and start the VM on host (the record's), then call on_running(vnc_port)
        before committing to it.

        Raises: TaskFailed with the failing step's code; everything made so far is undone.
        """
        vm_id, hypervisor = record.vm_id, host.hypervisor
        with ExitStack() as undo:
            placed = self.disks(host).make(record, undo)
            for mdev in record.placement.mdevs:  # GPU partitions, through the node device API
                with step("mdev_create_failed"):
                    hypervisor.mdevs.create(MdevRequest(mdev.uuid, mdev.parent, mdev.type_id))
                undo.callback(best_effort, "remove mdev", hypervisor.mdevs.remove, mdev.uuid)
            # The filter first: libvirt starts no NIC whose filter it does not have.
            nwfilter = self.firewall.put(vm_id, host, undo)
            xml = render_domain(replace(self._spec(record, host, placed), nwfilter=nwfilter))
            log.debug("domain XML for %s:\n%s", vm_id, xml)
            with step("define_failed"):
                hypervisor.define(xml)
            undo.callback(best_effort, "undefine", hypervisor.undefine, vm_id)
            with step("start_failed", record.gpu_functions,
                      [nic.network for nic in record.interfaces]):
                hypervisor.start(vm_id)
                undo.callback(best_effort, "power off", hypervisor.force_off, vm_id)
                hypervisor.set_autostart(vm_id, True)  # comes back with the host
            on_running(self.vnc_port(vm_id, host))
            undo.pop_all()

    def rebuild(self, record: BuildRecord, host: Host, start: bool, keep: Placed | None,
                made: Callable[[str], None]) -> int | None:
        """Define the VM on host again (an evacuation), over the files in keep, or over a
        fresh root disk and seed made from the record; start it when asked. made(kind) is told
        before each thing is made ("root", "domain"), so a cut-short attempt can be undone.
        Its VNC port (None when it does not run).

        Raises: TaskFailed with the failing step's code; what was made so far is undone.
        """
        vm_id, hypervisor = record.vm_id, host.hypervisor
        with ExitStack() as undo:
            if keep is None:
                made("root")
                placed = self.disks(host).make(record, undo)
            else:
                placed = keep
            nwfilter = self.firewall.put(vm_id, host, undo)  # before the NICs that name it
            xml = render_domain(replace(self._spec(record, host, placed), nwfilter=nwfilter))
            made("domain")
            with step("define_failed"):
                hypervisor.define(xml)
            undo.callback(best_effort, "undefine", hypervisor.undefine, vm_id)
            port = None
            if start:
                with step("start_failed", record.gpu_functions, record.network):
                    hypervisor.start(vm_id)
                    undo.callback(best_effort, "power off", hypervisor.force_off, vm_id)
                    hypervisor.set_autostart(vm_id, True)
                port = self.vnc_port(vm_id, host)
            undo.pop_all()
        return port

    def tear_down(self, vm_id: str, host: Host) -> None:
        """Force off, undefine, remove every disk of the VM; missing pieces are fine.

        Raises: TaskFailed when libvirt refuses or files cannot be removed.
        """
        with step("power_off_failed"):
            host.hypervisor.force_off(vm_id)
        with step("undefine_failed"):
            host.hypervisor.undefine(vm_id)
        with self._db.read() as conn:
            mdevs = [held for held in partition_dao.for_vm(conn, vm_id) if held.is_mdev]
        for mdev in mdevs:  # its GPU partitions go with it (a VF stays: it only goes back)
            with step("mdev_remove_failed"):
                host.hypervisor.mdevs.remove(mdev.mdev_uuid)
        self.firewall.remove(vm_id, host)  # once no domain uses it
        self.disks(host).remove(vm_id)

    def console_tail(self, vm_id: str, host: Host) -> bytes:
        """The end of the VM's serial console log (b'' before the guest wrote any)."""
        return self.disks(host).console_tail(vm_id)

    def _spec(self, record: BuildRecord, host: Host, placed: Placed) -> DomainSpec:
        domain_type = host.row.domain_type
        passthrough = bool(record.gpu_functions or record.placement.mdevs)
        placement = record.placement
        return DomainSpec(
            uuid=record.vm_id, name=record.domain_name, title=record.name,
            domain_type=domain_type, cpu=record.cpu, ram_mib=record.ram_mib,
            disk_path=placed.disk, disk_format="qcow2",
            nics=tuple(NicSpec(nic.network, nic.mac) for nic in record.interfaces),
            console_log=placed.console_log, installation_id=self._installation_id,
            image_name=record.image.name, seed_path=placed.seed,
            machine="q35" if passthrough else "pc",
            # TCG cannot pass the host CPU through; 'maximum' is its equivalent.
            cpu_mode=("maximum" if domain_type == "qemu" else "host-passthrough")
            if passthrough else None,
            hostdevs=tuple(split_address(address) for address in record.gpu_functions),
            mdevs=tuple(mdev.uuid for mdev in placement.mdevs),
            numa_node=placement.numa_node, cpuset=cpu_list(list(placement.node_cpus)),
            pinned_cpus=placement.pinned_cpus, hugepages=record.options.hugepages,
            volumes=tuple(DiskSpec(path=self._layers.volume_path(host, disk.volume_id),
                                   format=FORMAT, target_dev=disk.device,
                                   serial=serial_of(disk.volume_id), read_only=disk.read_only,
                                   shareable=disk.shareable) for disk in record.volumes))

    @staticmethod
    def vnc_port(vm_id: str, host: Host) -> int | None:
        try:
            return host.hypervisor.vnc_port(vm_id)
        except HypervisorError as exc:  # the VM runs; a missing console port is not fatal
            log.warning("could not read VNC port of %s: %s", vm_id, exc)
            return None


def cpu_list(cpus: list[int]) -> str:
    """libvirt's cpuset syntax for cpus: [0, 1, 2, 3, 8] -> '0-3,8'."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{low}-{high}" if high > low else str(low) for low, high in ranges)
