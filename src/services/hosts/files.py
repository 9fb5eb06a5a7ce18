"""Files of one place on a host, named as that place names them: a libvirt storage pool (reached
only through libvirt, so a remote host is served like this one) or a folder this machine shares
with the host. A migration carries a VM's files from one place to another through these."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from src.hypervisor.disks import QemuImg
from src.hypervisor.storage import Pools

FILE_MODE = 0o600


class HostFiles(Protocol):
    def where(self, name: str) -> str:
        """The path the file name has (or would have) on the host."""
    def exists(self, name: str) -> bool: ...
    def read_to(self, name: str, dest: Path) -> None:
        """Copy the file (as stored: a qcow2 layer with its backing reference) to dest here."""
    def write_from(self, name: str, source: Path) -> str:
        """Put the local file source there as name (replacing one of that name); its path."""
    def overlay(self, name: str, size_bytes: int, backing: tuple[str, str] | None) -> str:
        """A new empty qcow2 of size_bytes over backing = (path, format), or over nothing."""
    def virtual_size(self, name: str) -> int:
        """The size the guest sees of the qcow2 file name."""
    def remove(self, name: str) -> None:
        """A missing file is fine."""


class PoolFiles:
    """Volumes of one storage pool. Raises: HypervisorError from every call."""

    def __init__(self, pools: Pools, pool: str) -> None:
        self._pools = pools
        self._pool = pool

    def where(self, name: str) -> str:
        return os.path.join(self._pools.path(self._pool), name)

    def exists(self, name: str) -> bool:
        return self._pools.volume_path(self._pool, name) is not None

    def read_to(self, name: str, dest: Path) -> None:
        with dest.open("wb") as out:
            self._pools.download_to(self._pool, name, out)

    def write_from(self, name: str, source: Path) -> str:
        size = source.stat().st_size
        self._pools.delete_volume(self._pool, name)
        self._pools.create_volume(self._pool, name, size, "raw")  # the upload brings its format
        with source.open("rb") as data:
            self._pools.upload(self._pool, name, data, size)
        return self.where(name)

    def overlay(self, name: str, size_bytes: int, backing: tuple[str, str] | None) -> str:
        self._pools.delete_volume(self._pool, name)
        return self._pools.create_volume(self._pool, name, size_bytes, "qcow2", backing=backing)

    def virtual_size(self, name: str) -> int:
        info = self._pools.volume_info(self._pool, name)
        if info is None:
            raise FileNotFoundError(f"{name} is not in storage pool {self._pool}")
        return info.capacity_bytes

    def remove(self, name: str) -> None:
        self._pools.delete_volume(self._pool, name)


class DirFiles:
    """Files of a folder on this machine that the host sees at the same path.

    Raises: OSError, CommandFailed (qemu-img).
    """

    def __init__(self, folder: Path, qemu_img: QemuImg) -> None:
        self._folder = folder
        self._qemu_img = qemu_img

    def where(self, name: str) -> str:
        return str(self._folder / name)

    def exists(self, name: str) -> bool:
        return (self._folder / name).exists()

    def read_to(self, name: str, dest: Path) -> None:
        shutil.copyfile(self._folder / name, dest)

    def write_from(self, name: str, source: Path) -> str:
        path = self._folder / name
        path.unlink(missing_ok=True)
        shutil.copyfile(source, path)
        os.chmod(path, FILE_MODE)
        return str(path)

    def overlay(self, name: str, size_bytes: int, backing: tuple[str, str] | None) -> str:
        path = self._folder / name
        path.unlink(missing_ok=True)
        if backing is None:
            self._qemu_img.create(path, size_bytes)
        else:
            self._qemu_img.create_overlay(Path(backing[0]), backing[1], path, size_bytes)
        os.chmod(path, FILE_MODE)
        return str(path)

    def virtual_size(self, name: str) -> int:
        return int(self._qemu_img.info(self._folder / name, "qcow2")["virtual-size"])

    def remove(self, name: str) -> None:
        (self._folder / name).unlink(missing_ok=True)
