"""ImageService: the images a caller sees; register, create, inspect and delete base images in
IAAS_IMAGES_DIR."""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from src import errors
from src.database import images as image_dao
from src.database.db import Database
from src.hypervisor.disks import CommandFailed, QemuImg
from src.services.rules import access, quotas
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
        self._inspections: dict[tuple[Path, str], tuple[FileSignature, tuple[int, int]]] = {}
        self._inspections_guard = threading.Lock()

    def list(self, caller: Principal | None = None, limit: int = 1000,
             marker: str | None = None) -> list[image_dao.ImageRow]:
        """A page of the images caller sees (public ones and its project's; admins: all), oldest
        first, after the marker image.

        Raises: MarkerNotFound (not an image caller sees).
        """
        scope = access.scope(caller) if caller else None
        with self._db.read() as conn:
            after = image_dao.find(conn, marker, scope) if marker is not None else None
            if marker is not None and (after is None or after.id != marker):
                raise errors.MarkerNotFound(marker=marker)
            rows = image_dao.list_page(conn, scope, after, limit)
        return [self.as_seen(row) for row in rows]

    def get(self, id_or_name: str, caller: Principal | None = None) -> image_dao.ImageRow:
        """By id or name, among the images caller sees. Raises: ImageNotFound."""
        with self._db.read() as conn:
            image = self._find(conn, id_or_name, caller)
        if image is None:
            raise errors.ImageNotFound(image=id_or_name)
        return self.as_seen(image)

    @staticmethod
    def _find(conn: sqlite3.Connection, id_or_name: str,
              caller: Principal | None) -> image_dao.ImageRow | None:
        """The image caller means: by id any it sees; by name its own project's, then a public
        one (an admin's own project's private images included)."""
        if caller is None:
            return image_dao.find(conn, id_or_name, None)
        return image_dao.find(conn, id_or_name, access.scope(caller), own=caller.project)

    def as_seen(self, image: image_dao.ImageRow) -> image_dao.ImageRow:
        """The image as callers see it: an active image whose file is not in the images dir
        (seeded before its file came, or removed since) is missing_file. One stat, and only of
        active images (about a microsecond each)."""
        if image.status == "active" and not os.path.isfile(
                os.path.join(self._images_dir, image.file)):
            return replace(image, status="missing_file")
        return image

    def create(self, spec: NewImage, caller: Principal) -> image_dao.ImageRow:
        """Register spec.file (admins), or make a pending image for an upload.

        Raises: Forbidden, ImageFileInvalid, ChecksumMismatch, NameConflict, QuotaExceeded
        (images).
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
        size, virtual_size, digest = self._facts(path, spec.file, spec.format)
        if spec.sha256 and digest != spec.sha256:
            raise errors.ChecksumMismatch(actual=digest, expected=spec.sha256)
        return self._insert(replace(image, size_bytes=size, virtual_size_bytes=virtual_size,
                                    sha256=digest))

    @staticmethod
    def new_row(spec: NewImage, caller: Principal, visibility: str,
                origin: str) -> image_dao.ImageRow:
        """The row of a new image, filed under its owner (a public one under no project's
        name); an upload's or import's file is named by its id."""
        image_id = str(uuid.uuid4())
        return image_dao.ImageRow(
            id=image_id, name=spec.name, file=spec.file or f"{image_id}.{spec.format}",
            format=spec.format, size_bytes=None, virtual_size_bytes=None, created_at=utc_now(),
            project=access.image_owner(caller, visibility), visibility=visibility,
            status={"file": "active", "upload": "pending", "import": "importing"}[origin],
            origin=origin, expected_sha256=spec.sha256, source_url=spec.url)

    def _insert(self, image: image_dao.ImageRow) -> image_dao.ImageRow:
        """Raises: NameConflict when the project, or the public images, have the name;
        QuotaExceeded when the project has its limit of images."""
        try:
            with self._db.write() as conn:
                quotas.enforce(conn, image.project, {"images": 1})
                image_dao.insert(conn, image)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="image", name=image.name) from None
        return image

    def seed(self, name: str, file: str, fmt: str) -> bool:
        """Register name->file as a public image even if the file is not there yet (db-init,
        install-image); a registered image of that name still without its file is pointed at
        file instead. False if the name exists otherwise.

        Raises: ImageFileInvalid when the file is there but is not a usable image.
        """
        with self._db.read() as conn:
            existing = image_dao.find(conn, name, None)
        if existing is not None and (existing.origin != "file" or existing.file == file
                                     or self.as_seen(existing).status != "missing_file"):
            return False
        path = self.path_of(file)
        facts = self._facts(path, file, fmt) if path.is_file() else None
        if existing is not None:
            with self._db.write() as conn:
                image_dao.set_file(conn, existing.id, file, fmt, facts)
            return True
        image = self.new_row(NewImage(name=name, format=fmt, file=file),
                             Principal("", "default", "admin"), "public", "file")
        if facts is not None:
            image = replace(image, size_bytes=facts[0], virtual_size_bytes=facts[1],
                            sha256=facts[2])
        try:
            self._insert(image)
        except errors.NameConflict:
            return False
        return True

    def has_file(self, name: str) -> bool:
        """Whether the public image name exists and its file is in place."""
        with self._db.read() as conn:
            image = image_dao.find(conn, name, None)
        return image is not None and self.as_seen(image).status == "active"

    def delete(self, id_or_name: str, caller: Principal) -> image_dao.ImageRow:
        """Delete the image; an upload's or import's file goes with it (an import under way
        stops), a registered file stays. The image deleted.

        Raises: ImageNotFound, Forbidden, ImageInUse.
        """
        with self._db.write() as conn:
            image = self._find(conn, id_or_name, caller)
            if image is None:
                raise errors.ImageNotFound(image=id_or_name)
            access.check_image_owner(caller, image)
            users = image_dao.count_users(conn, image.id)
            if users:
                raise errors.ImageInUse(image=image.name, vm_count=users)
            image_dao.delete(conn, image.id)
        if image.origin != "file":
            self.path_of(image.file).unlink(missing_ok=True)
        return image

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
        if image.status not in ("active", "missing_file"):
            raise errors.ImageNotActive(image=image.name, status=image.status)
        path = self.path_of(image.file)
        if not path.is_file():
            raise errors.ImageFileMissing(file=image.file, image=image.name)
        image = replace(image, status="active")  # its file has come since it was looked up
        try:
            size, virtual_size = self._inspected(path, image.file, image.format)
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

    def _facts(self, path: Path, file: str, fmt: str) -> tuple[int, int, str]:
        """(size on disk, virtual size, SHA-256) of a file to register.

        Raises: ImageFileInvalid.
        """
        size, virtual_size = self.inspect(path, file, fmt)
        return size, virtual_size, file_sha256(path)

    def _inspected(self, path: Path, file: str, fmt: str) -> tuple[int, int]:
        """inspect's answer, from memory while the file is still the one inspected: qemu-img
        was a process per create (some 10 ms). A file replaced or written since has another
        inode, size or change time (which no user can set back), and is inspected again.

        Raises: ImageFileInvalid.
        """
        signature = file_signature(path)  # taken before: a change while qemu-img reads misses
        with self._inspections_guard:
            known = self._inspections.get((path, fmt))
        if known is not None and known[0] == signature:
            return known[1]
        facts = self.inspect(path, file, fmt)
        with self._inspections_guard:
            self._inspections[(path, fmt)] = (signature, facts)
        return facts

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


FileSignature = tuple[int, int, int, int, int]


def file_signature(path: Path) -> FileSignature:
    """What changes whenever a file is replaced or written: device, inode, size, modification
    and change times (ns)."""
    facts = path.stat()
    return (facts.st_dev, facts.st_ino, facts.st_size, facts.st_mtime_ns, facts.st_ctime_ns)


def file_sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
