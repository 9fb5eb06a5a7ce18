"""Copies of images in hosts' storage pools: uploaded through libvirt once per (host, image),
checked against the image's SHA-256, and shared by the VM disks and volumes made from it."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import ClassVar

from src.database import images as image_dao
from src.database.db import Database
from src.hypervisor.storage import Pools
from src.services.tasks.steps import best_effort
from src.utils.clock import utc_now


class ImageCopies:
    """The checked copy of an image in one host's pool."""

    # One copy per (host, image) at a time, whichever build asks first; the others wait.
    _copying: ClassVar[dict[tuple[str, str], threading.Lock]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db: Database, host_name: str, pools: Pools, pool: str) -> None:
        self._db = db
        self._host_name = host_name
        self._pools = pools
        self._pool = pool

    def volume_of(self, image_id: str, fmt: str, sha256: str | None, source: Path) -> str:
        """The name of the image's checked copy in the pool, copied now if there is none.

        Raises: ValueError (the copy does not match), HypervisorError.
        """
        with self._lock_for(image_id):
            with self._db.read() as conn:
                known = image_dao.copy_volume(conn, image_id, self._host_name)
            if known and self._pools.volume_path(self._pool, known) is not None:
                return known
            name = f"base-{image_id}.{fmt}"
            self._copy(source, name, sha256 or "")
            with self._db.write() as conn:
                image_dao.record_copy(conn, image_id, self._host_name, name, utc_now())
            return name

    def path_of(self, image_id: str, fmt: str, sha256: str | None, source: Path) -> str:
        """The path on the host of the image's checked copy (copied now if there is none)."""
        path = self._pools.volume_path(self._pool, self.volume_of(image_id, fmt, sha256, source))
        if path is None:  # removed behind our back between the two calls
            raise ValueError(f"the copy of {source.name} vanished from the pool")
        return path

    def _copy(self, source: Path, name: str, sha256: str) -> None:
        """Upload source as volume name and check it reads back with the same SHA-256.

        Raises: ValueError when the copy does not match (the volume is deleted).
        """
        size = source.stat().st_size
        self._pools.delete_volume(self._pool, name)  # a half copy of an earlier try
        self._pools.create_volume(self._pool, name, size, "raw")
        try:
            with source.open("rb") as data:
                self._pools.upload(self._pool, name, data, size)
            copied = hashlib.sha256(self._pools.download_tail(self._pool, name, size)).hexdigest()
            if copied != sha256:
                raise ValueError(f"the copy of {source.name} on the host has SHA-256 {copied}, "
                                 f"not {sha256}")
        except BaseException:
            best_effort("delete a bad copy", self._pools.delete_volume, self._pool, name)
            raise

    def _lock_for(self, image_id: str) -> threading.Lock:
        with self._guard:
            return self._copying.setdefault((self._host_name, image_id), threading.Lock())
