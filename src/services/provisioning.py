"""Build and tear down one VM on the host: overlay, XML, define, start, each step with its undo."""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from src.config import Config
from src.database.images import ImageRow
from src.database.vms import VmRow
from src.hypervisor.disks import CommandFailed, QemuImg
from src.hypervisor.domain_xml import DomainSpec, render_domain
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from src.hypervisor.pci import split_address
from src.services.placement import Claim
from src.services.tasks import TaskFailed
from src.utils.nocloud import Seed, write_seed

log = logging.getLogger(__name__)

DISK_FILE = "disk.qcow2"
SEED_FILE = "seed.iso"  # the cloud-init NoCloud volume
CONSOLE_LOG = "console.log"
OWNER_MARKER = ".iaas-installation"
GIB = 1024 ** 3
# Other local users may pass through a VM's folder (QEMU's user must reach its files) but list
# and read nothing; libvirt hands each file to QEMU's user while the VM runs.
FOLDER_MODE = 0o711
FILE_MODE = 0o600
# Words in libvirt's start errors that mean the PCI passthrough itself failed.
_PASSTHROUGH_WORDS = ("pci", "passthrough", "vfio", "iommu", "hostdev")


@dataclass(frozen=True)
class BuildPlan:
    """What one build needs: the VM's row, its base image, what placement gave it, its seed."""

    row: VmRow
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
    """Turns a BuildPlan into a running domain, or leaves nothing behind."""

    def __init__(self, config: Config, hypervisor: Hypervisor, qemu_img: QemuImg,
                 installation_id: str) -> None:
        self._config = config
        self._hypervisor = hypervisor
        self._qemu_img = qemu_img
        self._installation_id = installation_id

    def instance_dir(self, vm_id: str) -> Path:
        return self._config.instances_dir / vm_id

    def build(self, plan: BuildPlan, on_running: Callable[[int | None], None]) -> None:
        """Create and start the VM, then call on_running(vnc_port) before committing to it.

        Raises: TaskFailed with the failing step's code; everything made so far is undone.
        """
        vm_id = plan.row.id
        folder = self.instance_dir(vm_id)
        with ExitStack() as undo:
            with _step("instance_dir_failed"):
                self._make_folder(folder)
            undo.callback(_best_effort, "remove files", shutil.rmtree, folder)
            with _step("overlay_failed"):
                self._qemu_img.create_overlay(plan.base_path, plan.image.format,
                                              folder / DISK_FILE, plan.row.disk_gb * GIB)
                os.chmod(folder / DISK_FILE, FILE_MODE)
            with _step("seed_failed"):
                write_seed(plan.seed, folder / SEED_FILE)
            xml = render_domain(self._spec(plan, folder))
            log.debug("domain XML for %s:\n%s", vm_id, xml)
            with _step("define_failed"):
                self._hypervisor.define(xml)
            undo.callback(_best_effort, "undefine", self._hypervisor.undefine, vm_id)
            with _step("start_failed", plan.gpu_functions, self._config.network):
                self._hypervisor.start(vm_id)
                undo.callback(_best_effort, "power off", self._hypervisor.force_off, vm_id)
                self._hypervisor.set_autostart(vm_id, True)  # comes back with the host
            on_running(self.vnc_port(vm_id))
            undo.pop_all()

    def tear_down(self, vm_id: str) -> None:
        """Force off, undefine, remove every file of the VM; missing pieces are fine.

        Raises: TaskFailed when libvirt refuses or files cannot be removed.
        """
        with _step("power_off_failed"):
            self._hypervisor.force_off(vm_id)
        with _step("undefine_failed"):
            self._hypervisor.undefine(vm_id)
        folder = self.instance_dir(vm_id)
        with _step("file_removal_failed"):
            if folder.exists():
                shutil.rmtree(folder)

    def _make_folder(self, folder: Path) -> None:
        self._config.instances_dir.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        folder.mkdir(mode=FOLDER_MODE)  # never reuse: an existing folder is someone else's
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is cut by the umask
        marker = os.open(folder / OWNER_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(marker, "w") as out:
            out.write(self._installation_id + "\n")

    def _spec(self, plan: BuildPlan, folder: Path) -> DomainSpec:
        domain_type = self._config.domain_type
        passthrough = bool(plan.gpu_functions)
        row, claim = plan.row, plan.claim
        return DomainSpec(
            uuid=row.id, name=row.domain_name, title=row.name, domain_type=domain_type,
            cpu=row.cpu, ram_mib=row.ram, disk_path=str(folder / DISK_FILE), disk_format="qcow2",
            network=self._config.network, console_log=str(folder / CONSOLE_LOG),
            installation_id=self._installation_id, image_name=plan.image.name,
            mac=row.mac or plan.seed.mac,
            seed_path=str(folder / SEED_FILE), machine="q35" if passthrough else "pc",
            # TCG cannot pass the host CPU through; 'maximum' is its equivalent.
            cpu_mode=("maximum" if domain_type == "qemu" else "host-passthrough")
            if passthrough else None,
            hostdevs=tuple(split_address(address) for address in plan.gpu_functions),
            numa_node=claim.numa_node, cpuset=cpu_list(claim.node_cpus),
            pinned_cpus=tuple(claim.pinned_cpus), hugepages=plan.hugepages)

    def storage_gb(self) -> int:
        """Size in GiB of the filesystem that holds the instances folder (its nearest existing
        ancestor until the folder is made)."""
        folder = self._config.instances_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).total // GIB

    def console_log(self, vm_id: str) -> Path:
        return self.instance_dir(vm_id) / CONSOLE_LOG

    def vnc_port(self, vm_id: str) -> int | None:
        try:
            return self._hypervisor.vnc_port(vm_id)
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


@contextmanager
def _step(code: str, passthrough: list[str] | None = None,
          network: str | None = None) -> Iterator[None]:
    """Turn a host-side failure inside the block into TaskFailed(code, reason).

    Two start failures get codes of their own: gpu_passthrough_failed when libvirt's words
    name passthrough (with devices to pass through), and network_inactive with what to do.
    """
    try:
        yield
    except (HypervisorError, CommandFailed, OSError) as exc:
        message = str(exc)
        if passthrough and any(word in message.lower() for word in _PASSTHROUGH_WORDS):
            code = "gpu_passthrough_failed"
        elif network and f"network '{network}' is not active" in message:
            code, message = "network_inactive", (
                f"The network {network!r} is not active, so the VM cannot start: start it with "
                f"`virsh net-start {network}` and `virsh net-autostart {network}`, or run "
                f"`make serve`, which does both ({message}).")
        raise TaskFailed(code, message) from exc


def _best_effort(what: str, func: Callable[..., object], *args: object) -> None:
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - undo must go on with the remaining steps
        log.error("undo step %r failed: %s", what, exc)
