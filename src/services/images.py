"""ImageService: register, inspect, list and unregister base images in IAAS_IMAGES_DIR."""
from __future__ import annotations

import hashlib
import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path

from src import errors
from src.database import images as image_dao
from src.database.db import Database
from src.hypervisor.disks import CommandFailed, QemuImg
from src.services.redaction import redact
from src.utils.clock import utc_now


class ImageService:
    def __init__(self, db: Database, images_dir: Path, qemu_img: QemuImg) -> None:
        self._db = db
        self._images_dir = images_dir
        self._qemu_img = qemu_img

    def list(self) -> list[image_dao.ImageRow]:
        with self._db.read() as conn:
            return image_dao.list_all(conn)

    def get(self, id_or_name: str) -> image_dao.ImageRow:
        """Raises: ImageNotFound."""
        with self._db.read() as conn:
            image = image_dao.get(conn, id_or_name)
        if image is None:
            raise errors.ImageNotFound(image=id_or_name)
        return image

    def register(self, name: str, file: str, fmt: str) -> image_dao.ImageRow:
        """Register a file that already lies in the images dir, after checking what it is.

        Raises: ImageFileInvalid, NameConflict.
        """
        path = self.path_of(file)
        if not path.is_file():
            raise errors.ImageFileInvalid(file=file, reason="no such file in the images directory")
        image = self._insert(name, file, fmt, self._facts(path, file, fmt))
        if image is None:
            raise errors.NameConflict(kind="image", name=name)
        return image

    def seed(self, name: str, file: str, fmt: str) -> bool:
        """Register name→file even if the file is not there yet (db-init); False if it exists.

        Raises: ImageFileInvalid when the file is there but is not a usable image.
        """
        with self._db.read() as conn:
            if image_dao.get(conn, name) is not None:
                return False
        path = self.path_of(file)
        facts = self._facts(path, file, fmt) if path.is_file() else (None, None, None)
        return self._insert(name, file, fmt, facts) is not None

    def _insert(self, name: str, file: str, fmt: str,
                facts: tuple[int | None, int | None, str | None]) -> image_dao.ImageRow | None:
        """Store a new image row; None when the name is already taken."""
        image = image_dao.ImageRow(id=str(uuid.uuid4()), name=name, file=file, format=fmt,
                                   size_bytes=facts[0], virtual_size_bytes=facts[1],
                                   created_at=utc_now(), sha256=facts[2])
        try:
            with self._db.write() as conn:
                image_dao.insert(conn, image)
        except sqlite3.IntegrityError:
            return None
        return image

    def delete(self, id_or_name: str) -> None:
        """Unregister the image; its file stays. Raises: ImageNotFound, ImageInUse."""
        with self._db.write() as conn:
            image = image_dao.get(conn, id_or_name)
            if image is None:
                raise errors.ImageNotFound(image=id_or_name)
            users = image_dao.count_users(conn, image.id)
            if users:
                raise errors.ImageInUse(image=image.name, vm_count=users)
            image_dao.delete(conn, image.id)

    def copies(self, image: image_dao.ImageRow) -> tuple[str, ...]:
        """The hosts whose storage pool holds a checked copy of the image."""
        with self._db.read() as conn:
            return tuple(image_dao.copies(conn, image.id))

    def verify(self, image: image_dao.ImageRow) -> tuple[image_dao.ImageRow, Path, int]:
        """(the image with its facts, the base file, its virtual size), inspected now: a file
        replaced since registration (another format, a backing file, another size) is not
        trusted.

        Raises: ImageFileMissing, ImageInvalid.
        """
        path = self.path_of(image.file)
        if not path.is_file():
            raise errors.ImageFileMissing(file=image.file, image=image.name)
        try:
            size, virtual_size = self.inspect(path, image.file, image.format)
        except errors.ImageFileInvalid as exc:
            raise errors.ImageInvalid(image=image.name,
                                      reason=redact(exc.details["reason"])) from None
        if image.virtual_size_bytes is not None and virtual_size != image.virtual_size_bytes:
            raise errors.ImageInvalid(image=image.name, reason=(
                f"its virtual size changed from {image.virtual_size_bytes} to {virtual_size} "
                "bytes since it was registered"))
        if image.virtual_size_bytes is None or image.sha256 is None:  # seeded before its file
            image = replace(image, size_bytes=size, virtual_size_bytes=virtual_size,
                            sha256=file_sha256(path))
            with self._db.write() as conn:
                image_dao.set_facts(conn, image.id, size, virtual_size, image.sha256 or "")
        return image, path, virtual_size

    def _facts(self, path: Path, file: str, fmt: str) -> tuple[int, int, str]:
        """(size, virtual size, SHA-256) of a usable image. Raises: ImageFileInvalid."""
        size, virtual_size = self.inspect(path, file, fmt)
        return size, virtual_size, file_sha256(path)

    def path_of(self, file: str) -> Path:
        """The absolute path of a bare file name inside the images dir.

        Raises: ImageFileInvalid when the name is a path or resolves outside the dir.
        """
        if not file or "/" in file or "\0" in file or file in (".", ".."):
            raise errors.ImageFileInvalid(file=file, reason="must be a bare file name")
        path = self._images_dir / file
        if not path.resolve().is_relative_to(self._images_dir.resolve()):
            raise errors.ImageFileInvalid(file=file, reason="resolves outside the images directory")
        return path

    def inspect(self, path: Path, file: str, fmt: str) -> tuple[int, int]:
        """(size on disk, virtual size) of a standalone image of format fmt.

        Raises: ImageFileInvalid when it is another format or depends on other files.
        """
        try:
            info = self._qemu_img.info(path, fmt)
            probed = self._qemu_img.info(path, None)["format"] if fmt == "raw" else fmt
        except CommandFailed as exc:
            raise errors.ImageFileInvalid(file=file, reason=f"not a {fmt} image: {exc.detail}") \
                from None
        if probed != fmt:  # a raw claim over a qcow2 file would hide its backing chain
            raise errors.ImageFileInvalid(file=file, reason=f"declared {fmt} but is {probed}")
        if info.get("backing-filename") or info.get("full-backing-filename"):
            raise errors.ImageFileInvalid(file=file, reason="has a backing file")
        data = info.get("format-specific", {}).get("data", {})
        if data.get("data-file"):
            raise errors.ImageFileInvalid(file=file, reason="has an external data file")
        return int(info.get("actual-size", 0)), int(info["virtual-size"])


def file_sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
