"""Where a VM's disks, seed and console log live on its host, made and removed step by step.

`shared` hosts see IAAS_IMAGES_DIR and IAAS_INSTANCES_DIR at the same paths (this machine, or
NFS): files are made here with qemu-img. `pool` hosts keep everything in their own libvirt
storage pool: the base image is copied once through libvirt's upload stream and checked against
its SHA-256, overlays are pool volumes with a <backingStore>, the seed is uploaded, and nothing
of such a VM is written on this machine.
"""
from __future__ import annotations

import io
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from src.config import Config
from src.database.db import Database
from src.hypervisor.disks import QemuImg
from src.hypervisor.storage import Pools
from src.services.hosts.files import DirFiles, HostFiles, PoolFiles
from src.services.images.copies import ImageCopies
from src.services.tasks.steps import best_effort, step
from src.utils.nocloud import seed_bytes, write_seed

if TYPE_CHECKING:
    from src.services.hosts.registry import Host
    from src.services.vms.build_record import BuildRecord, ImageRef

DISK_FILE = "disk.qcow2"
SEED_FILE = "seed.iso"  # the cloud-init NoCloud volume
CONSOLE_LOG = "console.log"
OWNER_MARKER = ".iaas-installation"
GIB = 1024 ** 3
# Other local users may pass through a VM's folder (QEMU's user must reach its files) but list
# and read nothing; libvirt hands each file to QEMU's user while the VM runs.
FOLDER_MODE = 0o711
FILE_MODE = 0o600
CONSOLE_READ_LIMIT = 1024 * 1024  # a console tail reads at most the last MiB of the log


@dataclass(frozen=True)
class Placed:
    """Paths on the VM's host that its domain XML names."""

    disk: str
    seed: str
    console_log: str


class Disks(Protocol):
    def make(self, record: BuildRecord, undo: ExitStack) -> Placed: ...
    def remove(self, vm_id: str) -> None: ...
    def console_tail(self, vm_id: str) -> bytes: ...
    # The root disk's layers (snapshots own the frozen ones; src/services/vms/root_disks.py).
    def root_layer(self, vm_id: str) -> str: ...
    def layer_name(self, vm_id: str, generation: int) -> str: ...
    def layer_path(self, vm_id: str, layer: str) -> str: ...
    def stack(self, vm_id: str, parent: str, layer: str, size_gb: int) -> str: ...
    def remove_layer(self, vm_id: str, layer: str) -> None: ...
    def flatten(self, vm_id: str, layer: str, size_gb: int, dest: Path) -> None: ...
    # The VM's files one by one, by the names the next three give (a migration carries them).
    def files(self, vm_id: str) -> HostFiles: ...
    def seed_name(self, vm_id: str) -> str: ...
    def console_name(self, vm_id: str) -> str: ...
    def prepare(self, vm_id: str) -> None:
        """Make the place the VM's files go (a folder), if there is none yet."""
    def base_of(self, image: ImageRef) -> str:
        """The path on the host of the image a root disk is backed by (copied there first)."""


class SharedDisks:
    """A folder per VM under IAAS_INSTANCES_DIR, made on this machine."""

    def __init__(self, config: Config, qemu_img: QemuImg, installation_id: str) -> None:
        self._config = config
        self._qemu_img = qemu_img
        self._installation_id = installation_id

    def folder(self, vm_id: str) -> Path:
        return self._config.instances_dir / vm_id

    def make(self, record: BuildRecord, undo: ExitStack) -> Placed:
        """Raises: TaskFailed (instance_dir_failed, overlay_failed, seed_failed)."""
        folder = self.folder(record.vm_id)
        with step("instance_dir_failed"):
            self._make_folder(folder)
        undo.callback(best_effort, "remove files", shutil.rmtree, folder)
        with step("overlay_failed"):
            self._qemu_img.create_overlay(record.base_path, record.image.format,
                                          folder / DISK_FILE, record.disk_gb * GIB)
            os.chmod(folder / DISK_FILE, FILE_MODE)
        with step("seed_failed"):
            write_seed(record.seed, folder / SEED_FILE)
        return Placed(str(folder / DISK_FILE), str(folder / SEED_FILE),
                      str(folder / CONSOLE_LOG))

    def remove(self, vm_id: str) -> None:
        """Raises: TaskFailed (file_removal_failed)."""
        folder = self.folder(vm_id)
        with step("file_removal_failed"):
            if folder.exists():
                shutil.rmtree(folder)

    def console_tail(self, vm_id: str) -> bytes:
        try:
            with (self.folder(vm_id) / CONSOLE_LOG).open("rb") as log_file:
                size = log_file.seek(0, 2)
                log_file.seek(max(0, size - CONSOLE_READ_LIMIT))
                return log_file.read()
        except FileNotFoundError:
            return b""

    def root_layer(self, vm_id: str) -> str:
        return DISK_FILE

    def layer_name(self, vm_id: str, generation: int) -> str:
        return f"layer-{generation}.qcow2"

    def layer_path(self, vm_id: str, layer: str) -> str:
        return str(self.folder(vm_id) / layer)

    def stack(self, vm_id: str, parent: str, layer: str, size_gb: int) -> str:
        """A new layer backed by parent. Raises: CommandFailed, FileExistsError."""
        path = self.folder(vm_id) / layer
        path.unlink(missing_ok=True)  # what a cut-short earlier attempt left
        self._qemu_img.create_overlay(Path(self.layer_path(vm_id, parent)), "qcow2", path,
                                      size_gb * GIB)
        os.chmod(path, FILE_MODE)
        return str(path)

    def remove_layer(self, vm_id: str, layer: str) -> None:
        (self.folder(vm_id) / layer).unlink(missing_ok=True)

    def flatten(self, vm_id: str, layer: str, size_gb: int, dest: Path) -> None:
        """The layer's content with its backing chain, as one qcow2 file. Raises: CommandFailed."""
        self._qemu_img.convert(Path(self.layer_path(vm_id, layer)), "qcow2", dest, "qcow2")

    def files(self, vm_id: str) -> HostFiles:
        return DirFiles(self.folder(vm_id), self._qemu_img)

    def seed_name(self, vm_id: str) -> str:
        return SEED_FILE

    def console_name(self, vm_id: str) -> str:
        return CONSOLE_LOG

    def base_of(self, image: ImageRef) -> str:
        return image.path

    def prepare(self, vm_id: str) -> None:
        """Raises: OSError."""
        if not self.folder(vm_id).is_dir():
            self._make_folder(self.folder(vm_id))

    def capacity_gb(self) -> int:
        """Size in GiB of the filesystem that holds the instances folder (its nearest existing
        ancestor until the folder is made)."""
        folder = self._config.instances_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).total // GIB

    def _make_folder(self, folder: Path) -> None:
        self._config.instances_dir.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        folder.mkdir(mode=FOLDER_MODE)  # never reuse: an existing folder is someone else's
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is cut by the umask
        marker = os.open(folder / OWNER_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(marker, "w") as out:
            out.write(self._installation_id + "\n")


class PoolDisks:
    """Volumes in the host's libvirt storage pool; the base image is copied there once."""

    def __init__(self, db: Database, host: Host) -> None:
        self._db = db
        self._host = host
        self._pool = host.row.storage_pool
        self._pools: Pools = host.hypervisor.pools

    def make(self, record: BuildRecord, undo: ExitStack) -> Placed:
        """Raises: TaskFailed (image_copy_failed, overlay_failed, seed_failed)."""
        vm_id = record.vm_id
        with step("image_copy_failed"):
            base = self.base_of(record.image)
        with step("overlay_failed"):
            disk = self._pools.create_volume(self._pool, f"{vm_id}.qcow2", record.disk_gb * GIB,
                                             "qcow2", backing=(base, record.image.format))
        undo.callback(best_effort, "delete overlay", self._pools.delete_volume, self._pool,
                      f"{vm_id}.qcow2")
        with step("seed_failed"):
            data = seed_bytes(record.seed)
            seed = self._pools.create_volume(self._pool, f"{vm_id}-seed.iso", len(data), "raw")
            undo.callback(best_effort, "delete seed", self._pools.delete_volume, self._pool,
                          f"{vm_id}-seed.iso")
            self._pools.upload(self._pool, f"{vm_id}-seed.iso", io.BytesIO(data), len(data))
        console = os.path.join(self._pools.path(self._pool), f"{vm_id}-console.log")
        return Placed(disk, seed, console)

    def remove(self, vm_id: str) -> None:
        """Raises: TaskFailed (file_removal_failed)."""
        with step("file_removal_failed"):
            for name in self._pools.volumes(self._pool):
                if name.startswith(f"{vm_id}-layer-"):  # its snapshots' layers
                    self._pools.delete_volume(self._pool, name)
            for suffix in (".qcow2", "-flat.qcow2", "-seed.iso", "-console.log"):
                self._pools.delete_volume(self._pool, vm_id + suffix)

    def console_tail(self, vm_id: str) -> bytes:
        return self._pools.download_tail(self._pool, f"{vm_id}-console.log", CONSOLE_READ_LIMIT)

    def root_layer(self, vm_id: str) -> str:
        return f"{vm_id}.qcow2"

    def layer_name(self, vm_id: str, generation: int) -> str:
        return f"{vm_id}-layer-{generation}.qcow2"

    def layer_path(self, vm_id: str, layer: str) -> str:
        path = self._pools.volume_path(self._pool, layer)
        if path is None:
            raise FileNotFoundError(f"layer {layer} is not in pool {self._pool}")
        return path

    def stack(self, vm_id: str, parent: str, layer: str, size_gb: int) -> str:
        self._pools.delete_volume(self._pool, layer)
        return self._pools.create_volume(self._pool, layer, size_gb * GIB, "qcow2",
                                         backing=(self.layer_path(vm_id, parent), "qcow2"))

    def remove_layer(self, vm_id: str, layer: str) -> None:
        self._pools.delete_volume(self._pool, layer)

    def flatten(self, vm_id: str, layer: str, size_gb: int, dest: Path) -> None:
        """A flattened clone in the pool (libvirt's qemu-img convert), downloaded to dest."""
        flat = f"{vm_id}-flat.qcow2"
        self._pools.delete_volume(self._pool, flat)
        try:
            self._pools.clone_volume(self._pool, flat, self._pool, layer, size_gb * GIB)
            with dest.open("wb") as out:
                self._pools.download_to(self._pool, flat, out)
        finally:
            best_effort("delete the flattened copy", self._pools.delete_volume, self._pool, flat)

    def files(self, vm_id: str) -> HostFiles:
        return PoolFiles(self._pools, self._pool)

    def seed_name(self, vm_id: str) -> str:
        return f"{vm_id}-seed.iso"

    def console_name(self, vm_id: str) -> str:
        return f"{vm_id}-console.log"

    def prepare(self, vm_id: str) -> None:
        """Nothing: the pool is there."""

    def base_of(self, image: ImageRef) -> str:
        """The path of the image's checked copy in the pool, copied now if there is none.

        Concurrent builds on one host wait for the one copy. Raises: ValueError (a bad copy),
        HypervisorError.
        """
        copies = ImageCopies(self._db, self._host.name, self._pools, self._pool)
        return copies.path_of(image.id, image.format, image.sha256, Path(image.path))

