"""ImageService: the images a caller sees; register, create, inspect and delete base images in
IAAS_IMAGES_DIR."""
from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from src import errors
from src.database import images as image_dao
from src.database.db import Database
from src.hypervisor.disks import CommandFailed, QemuImg
from src.services.rules import access
from src.services.rules.access import Principal
from src.services.rules.redaction import redact
from src.utils.clock import utc_now

log = logging.getLogger(__name__)
PARTIAL_PREFIX = ".iaas-partial-"  # files an upload or import is still writing
INTERRUPTED = ("interrupted", "The server stopped before the image's file arrived whole.")


@dataclass(frozen=True)
class NewImage:
    """A validated create body: a registration (file), an upload to come, or an import (url)."""

    name: str
    format: str
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    visibility: str | None = None


class ImageService:
    def __init__(self, db: Database, images_dir: Path, qemu_img: QemuImg) -> None:
        self._db = db
        self._images_dir = images_dir
        self._qemu_img = qemu_img

    def list(self, caller: Principal | None = None) -> list[image_dao.ImageRow]:
        """The images caller sees: public ones and its project's (admins: all)."""
        with self._db.read() as conn:
            return image_dao.list_visible(conn, access.scope(caller) if caller else None)

    def get(self, id_or_name: str, caller: Principal | None = None) -> image_dao.ImageRow:
        """By id or name, among the images caller sees. Raises: ImageNotFound."""
        with self._db.read() as conn:
            image = image_dao.find(conn, id_or_name, access.scope(caller) if caller else None)
        if image is None:
            raise errors.ImageNotFound(image=id_or_name)
        return image

    def create(self, spec: NewImage, caller: Principal) -> image_dao.ImageRow:
        """Register spec.file (admins), or make a pending image for an upload.

        Raises: Forbidden, ImageFileInvalid, ChecksumMismatch, NameConflict.
        """
        visibility = access.image_visibility(caller, spec.visibility)
        image = self.new_row(spec, caller, visibility, "file" if spec.file else "upload")
        if spec.file is None:
            return self._insert(image)
        access.require_admin(caller)  # a path on the server is the operator's business
        path = self.path_of(spec.file)
        if not path.is_file():
            raise errors.ImageFileInvalid(file=spec.file,
                                          reason="no such file in the images directory")
        size, virtual_size = self.inspect(path, spec.file, spec.format)
        digest = file_sha256(path)
        if spec.sha256 and digest != spec.sha256:
            raise errors.ChecksumMismatch(actual=digest, expected=spec.sha256)
        return self._insert(replace(image, size_bytes=size, virtual_size_bytes=virtual_size,
                                    sha256=digest))

    @staticmethod
    def new_row(spec: NewImage, caller: Principal, visibility: str,
                origin: str) -> image_dao.ImageRow:
        """The row of a new image; an upload's or import's file is named by its id."""
        image_id = str(uuid.uuid4())
        return image_dao.ImageRow(
            id=image_id, name=spec.name, file=spec.file or f"{image_id}.{spec.format}",
            format=spec.format, size_bytes=None, virtual_size_bytes=None, created_at=utc_now(),
            project=caller.project, visibility=visibility,
            status={"file": "active", "upload": "pending", "import": "importing"}[origin],
            origin=origin, expected_sha256=spec.sha256, source_url=spec.url)

    def _insert(self, image: image_dao.ImageRow) -> image_dao.ImageRow:
        """Raises: NameConflict when the project, or the public images, have the name."""
        try:
            with self._db.write() as conn:
                image_dao.insert(conn, image)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="image", name=image.name) from None
        return image

    def seed(self, name: str, file: str, fmt: str) -> bool:
        """Register name→file for the default project even if the file is not there yet
        (db-init); False if the name exists.

        Raises: ImageFileInvalid when the file is there but is not a usable image.
        """
        with self._db.read() as conn:
            if image_dao.find(conn, name, "default") is not None:
                return False
        path = self.path_of(file)
        image = self.new_row(NewImage(name=name, format=fmt, file=file),
                             Principal("", "default", "admin"), "public", "file")
        if path.is_file():
            size, virtual_size = self.inspect(path, file, fmt)
            image = replace(image, size_bytes=size, virtual_size_bytes=virtual_size,
                            sha256=file_sha256(path))
        try:
            self._insert(image)
        except errors.NameConflict:
            return False
        return True

    def has_file(self, name: str) -> bool:
        """Whether the default project's image name exists and its file is in place."""
        with self._db.read() as conn:
            image = image_dao.find(conn, name, "default")
        return image is not None and self.path_of(image.file).is_file()

    def delete(self, id_or_name: str, caller: Principal) -> None:
        """Delete the image; an upload's or import's file goes with it (an import under way
        stops), a registered file stays.

        Raises: ImageNotFound, Forbidden, ImageInUse.
        """
        with self._db.write() as conn:
            image = image_dao.find(conn, id_or_name, access.scope(caller))
            if image is None:
                raise errors.ImageNotFound(image=id_or_name)
            access.check_image_owner(caller, image.project)
            users = image_dao.count_users(conn, image.id)
            if users:
                raise errors.ImageInUse(image=image.name, vm_count=users)
            image_dao.delete(conn, image.id)
        if image.origin != "file":
            self.path_of(image.file).unlink(missing_ok=True)

    def copies(self, image: image_dao.ImageRow) -> tuple[str, ...]:
        """The hosts whose storage pool holds a checked copy of the image."""
        with self._db.read() as conn:
            return tuple(image_dao.copies(conn, image.id))

    def recover(self, imports_elsewhere: bool = False) -> int:
        """At start-up: imports a stop cut short fail (interrupted), and files that uploads or
        imports were writing are removed; how many images failed. imports_elsewhere: Celery
        workers run the imports (they outlive this process), so importing images and their
        files are theirs."""
        with self._db.write() as conn:
            importing = image_dao.in_status(conn, ("importing",))
            if not imports_elsewhere:
                for image in importing:
                    image_dao.set_status(conn, image.id, "error", ("importing",), INTERRUPTED)
        kept = {image.id for image in importing} if imports_elsewhere else set()
        for partial in self._images_dir.glob(PARTIAL_PREFIX + "*"):
            if partial.name[len(PARTIAL_PREFIX):].rsplit("-", 1)[0] not in kept:
                partial.unlink(missing_ok=True)
        return 0 if imports_elsewhere else len(importing)

    def remove_partials(self, image_id: str) -> None:
        """What an earlier attempt at the image's import left half-written."""
        for partial in self._images_dir.glob(f"{PARTIAL_PREFIX}{image_id}-*"):
            partial.unlink(missing_ok=True)

    def verify(self, image: image_dao.ImageRow) -> tuple[image_dao.ImageRow, Path, int]:
        """(the image with its facts, the base file, its virtual size), inspected now: a file
        replaced since registration (another format, a backing file, another size) is not
        trusted.

        Raises: ImageNotActive, ImageFileMissing, ImageInvalid.
        """
        if image.status != "active":
            raise errors.ImageNotActive(image=image.name, status=image.status)
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

    @property
    def images_dir(self) -> Path:
        return self._images_dir

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
