"""Build and tear down one VM on its host: disks, XML, define, start, each step with its undo."""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from src.config import Config
from src.database.db import Database
from src.database.images import ImageRow
from src.database.vms import VmRow
from src.hypervisor.disks import QemuImg
from src.hypervisor.domain_xml import DomainSpec, render_domain
from src.hypervisor.errors import HypervisorError
from src.hypervisor.pci import split_address
from src.services.hosts.registry import Host
from src.services.rules.placement import Claim
from src.services.tasks.steps import best_effort, step
from src.services.vms.disks import GIB, Disks, Placed, PoolDisks, SharedDisks
from src.utils.nocloud import Seed

__all__ = ["GIB", "BuildPlan", "Provisioner", "cpu_list"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildPlan:
    """What one build needs: the VM's row, its host and base image, what placement gave it,
    and its seed."""

    row: VmRow
    host: Host
    image: ImageRow
    base_path: Path
    claim: Claim
    seed: Seed
    hugepages: bool = False

    @property
    def gpu_functions(self) -> list[str]:
        """PCI addresses to pass through: every function of every claimed GPU."""
        return [fn for gpu in self.claim.gpus for fn in gpu.functions]


class Provisioner:
    """Turns a BuildPlan into a running domain on its host, or leaves nothing behind."""

    def __init__(self, config: Config, db: Database, qemu_img: QemuImg,
                 installation_id: str) -> None:
        self._db = db
        self._installation_id = installation_id
        self.shared = SharedDisks(config, qemu_img, installation_id)

    def disks(self, host: Host) -> Disks:
        return PoolDisks(self._db, host) if host.row.storage == "pool" else self.shared

    def build(self, plan: BuildPlan, on_running: Callable[[int | None], None]) -> None:
        """Create and start the VM, then call on_running(vnc_port) before committing to it.

        Raises: TaskFailed with the failing step's code; everything made so far is undone.
        """
        vm_id, hypervisor = plan.row.id, plan.host.hypervisor
        with ExitStack() as undo:
            placed = self.disks(plan.host).make(plan, undo)
            xml = render_domain(self._spec(plan, placed))
            log.debug("domain XML for %s:\n%s", vm_id, xml)
            with step("define_failed"):
                hypervisor.define(xml)
            undo.callback(best_effort, "undefine", hypervisor.undefine, vm_id)
            with step("start_failed", plan.gpu_functions, plan.host.row.network):
                hypervisor.start(vm_id)
                undo.callback(best_effort, "power off", hypervisor.force_off, vm_id)
                hypervisor.set_autostart(vm_id, True)  # comes back with the host
            on_running(self.vnc_port(vm_id, plan.host))
            undo.pop_all()

    def tear_down(self, vm_id: str, host: Host) -> None:
        """Force off, undefine, remove every disk of the VM; missing pieces are fine.

        Raises: TaskFailed when libvirt refuses or files cannot be removed.
        """
        with step("power_off_failed"):
            host.hypervisor.force_off(vm_id)
        with step("undefine_failed"):
            host.hypervisor.undefine(vm_id)
        self.disks(host).remove(vm_id)

    def console_tail(self, vm_id: str, host: Host) -> bytes:
        """The end of the VM's serial console log (b'' before the guest wrote any)."""
        return self.disks(host).console_tail(vm_id)

    def _spec(self, plan: BuildPlan, placed: Placed) -> DomainSpec:
        domain_type = plan.host.row.domain_type
        passthrough = bool(plan.gpu_functions)
        row, claim = plan.row, plan.claim
        return DomainSpec(
            uuid=row.id, name=row.domain_name, title=row.name, domain_type=domain_type,
            cpu=row.cpu, ram_mib=row.ram, disk_path=placed.disk, disk_format="qcow2",
            network=plan.host.row.network, console_log=placed.console_log,
            installation_id=self._installation_id, image_name=plan.image.name,
            mac=row.mac or plan.seed.mac,
            seed_path=placed.seed, machine="q35" if passthrough else "pc",
            # TCG cannot pass the host CPU through; 'maximum' is its equivalent.
            cpu_mode=("maximum" if domain_type == "qemu" else "host-passthrough")
            if passthrough else None,
            hostdevs=tuple(split_address(address) for address in plan.gpu_functions),
            numa_node=claim.numa_node, cpuset=cpu_list(claim.node_cpus),
            pinned_cpus=tuple(claim.pinned_cpus), hugepages=plan.hugepages)

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
