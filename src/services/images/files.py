"""An image's bytes arriving (an upload's body, an import's download): written to a hidden file
in IAAS_IMAGES_DIR and hashed as they come, never held whole in memory; then checked (checksum,
format, quota) and put in place, or removed with the image marked `error`."""
from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO, Protocol

from src import errors
from src.database import images as image_dao
from src.database.db import Database
from src.services.images.admissions import Admission, UploadDesk
from src.services.images.catalog import PARTIAL_PREFIX, ImageService
from src.services.rules import access, quotas
from src.services.rules.access import Principal
from src.services.rules.redaction import redact
from src.services.tasks.runner import TaskFailed

CHUNK = 1024 * 1024
PROGRESS_EVERY_S = 0.5  # how often bytes received are written to the image row
FILE_MODE = 0o644  # QEMU's user reads base images; nobody but us writes them
UPLOAD_INCOMPLETE = "upload_incomplete"


class Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Cancelled(Exception):
    """The image was deleted, or failed, while its bytes arrived."""


class TooLarge(Exception):
    """More bytes arrived than IAAS_IMAGE_MAX_BYTES allows."""


class Landing:
    """A hidden file in the images dir, hashed and counted as it is written."""

    def __init__(self, intake: Intake, image: image_dao.ImageRow, status: str,
                 total: int | None) -> None:
        self.path = intake.images.images_dir / f"{PARTIAL_PREFIX}{image.id}-{secrets.token_hex(4)}"
        self.size = 0
        self._intake = intake
        self._image = image
        self._room = intake.room(image)  # images_gb's, refreshed with each progress report
        self._status = status
        self._total = total
        self._digest = hashlib.sha256()
        self._last_report = time.monotonic()
        intake.images.images_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Raises: TooLarge, QuotaExceeded (more bytes than images_gb leaves, checked before
        they are written), Cancelled (the image is gone or no longer waits for bytes)."""
        self.size += len(chunk)
        if self.size > self._intake.max_bytes:
            raise TooLarge()
        self._room.check(self.size)
        self._digest.update(chunk)
        self._file.write(chunk)
        if time.monotonic() - self._last_report >= PROGRESS_EVERY_S:
            self._last_report = time.monotonic()
            self._room = self._intake.report(self._image, self._status, self.size, self._total)

    def pour(self, source: Reader) -> None:
        """Everything source gives, to its end. Raises: what write and source.read raise."""
        while chunk := source.read(CHUNK):
            self.write(chunk)

    def close(self) -> str:
        """Flush the file to disk; its SHA-256."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._digest.hexdigest()

    def discard(self) -> None:
        try:
            self._file.close()  # may raise: it flushes, and the disk may be what is full
        finally:
            self.path.unlink(missing_ok=True)


class Intake:
    """Admits uploads (each once, src/services/images/admissions.py) and lands uploads and
    imports, then checks them."""

    def __init__(self, db: Database, images: ImageService, max_bytes: int,
                 desk: UploadDesk) -> None:
        self._db = db
        self.images = images
        self.max_bytes = max_bytes
        self.desk = desk

    def admit(self, id_or_name: str, caller: Principal, length: int | None) -> Admission:
        """The one check of an upload, from its headers alone, before a byte of its body is
        read: the image, whether caller may send it a body of length bytes (None: chunked)
        now, and a slot; the announced length is reserved against images_gb until release.
        The admission says how large the body may grow: what IAAS_IMAGE_MAX_BYTES and
        images_gb leave.

        Raises: ImageNotFound, Forbidden, ImageNotPending, BodyTooLarge, QuotaExceeded,
        UploadInProgress, TooManyUploads, UploadsBusy.
        """
        image = self._uploadable(id_or_name, caller)
        if length is not None and length > self.max_bytes:
            raise errors.BodyTooLarge(limit=self.max_bytes)
        with self.desk.lock:  # the room read and the slot taken as one, for racing uploads
            room = self._room(image)
            room.check(max(length or 0, 1))  # a body of unknown length needs room for a byte
            left = room.left
            limit, beyond = ((self.max_bytes, errors.BodyTooLarge(limit=self.max_bytes))
                             if left is None or left >= self.max_bytes
                             else (left, room.refusal(left + 1)))
            admission = Admission(image, caller, length, limit, beyond, length or 0, self.desk)
            self.desk.take(admission)
        return admission

    def upload(self, admission: Admission, body: Reader) -> image_dao.ImageRow:
        """Stream an admitted upload's body into its image's file (to its end).

        Raises: ImageNotFound (deleted meanwhile), what body.read raises (IncompleteBody,
        BadRequest, UploadTooSlow), BodyTooLarge, QuotaExceeded, ChecksumMismatch,
        ImageFileInvalid.
        """
        self._start(admission)
        return self.land(admission.image, "pending", lambda landing: landing.pour(body),
                         admission.length)

    def _uploadable(self, id_or_name: str, caller: Principal) -> image_dao.ImageRow:
        """The image, if caller may upload its file now.

        Raises: ImageNotFound, Forbidden, ImageNotPending.
        """
        image = self.images.get(id_or_name, caller)
        access.check_image_owner(caller, image)
        if image.origin != "upload" or image.status not in ("pending", "error"):
            raise errors.ImageNotPending(image=image.name, status=image.status)
        return image

    def _start(self, admission: Admission) -> None:
        """Clear an earlier failure and let the image's row reserve the announced length (the
        admission checked it against images_gb and held it until now).

        Raises: ImageNotFound (deleted meanwhile).
        """
        image = admission.image
        with self._db.write() as conn:
            if not image_dao.set_status(conn, image.id, "pending", ("pending", "error"),
                                        bytes_total=admission.length):
                raise errors.ImageNotFound(image=image.name)
        admission.counted()

    def land(self, image: image_dao.ImageRow, status: str, fill: Callable[[Landing], None],
             total: int | None) -> image_dao.ImageRow:
        """Write the image's bytes with fill, check them and make the image active.

        On any failure the file is removed and the image is left in error with a code.
        Raises: what fill raises (IncompleteBody, ...), BodyTooLarge, ChecksumMismatch,
        ImageFileInvalid, QuotaExceeded, ImageNotFound (deleted meanwhile).
        """
        landing = Landing(self, image, status, total)
        try:
            fill(landing)
            digest = landing.close()
            facts = self._check(image, landing, digest)
            return self._put_in_place(image, status, landing, facts)
        except Cancelled:
            landing.discard()
            raise errors.ImageNotFound(image=image.name) from None
        except TooLarge:
            landing.discard()
            self.fail(image, status, "image_too_large",
                      f"The image is larger than IAAS_IMAGE_MAX_BYTES ({self.max_bytes} bytes).")
            raise errors.BodyTooLarge(limit=self.max_bytes) from None
        except errors.ApiError as exc:
            landing.discard()
            self.fail(image, status, _code_of(exc), exc.message)
            raise
        except TaskFailed as exc:  # an import's download broke off
            landing.discard()
            self.fail(image, status, exc.code, exc.message)
            raise
        except BaseException:
            landing.discard()
            self.fail(image, status, "internal_error", "The file could not be stored.")
            raise

    def _check(self, image: image_dao.ImageRow, landing: Landing,
               digest: str) -> tuple[int, int, str]:
        """(size, virtual size, SHA-256) of a file fit to boot VMs.

        Raises: ChecksumMismatch, ImageFileInvalid.
        """
        if image.expected_sha256 and digest != image.expected_sha256:
            raise errors.ChecksumMismatch(actual=digest, expected=image.expected_sha256)
        try:
            size, virtual_size = self.images.inspect(landing.path, image.file, image.format)
        except errors.ImageFileInvalid as exc:  # qemu-img names the file by its host path
            raise errors.ImageFileInvalid(file=image.file,
                                          reason=redact(exc.details["reason"])) from None
        return size, virtual_size, digest

    def _put_in_place(self, image: image_dao.ImageRow, status: str, landing: Landing,
                      facts: tuple[int, int, str]) -> image_dao.ImageRow:
        """Rename the file to its name and make the image active, in one transaction with the
        final quota check. Raises: QuotaExceeded, Cancelled (deleted meanwhile)."""
        final = self.images.path_of(image.file)
        with self._db.write() as conn:
            quotas.enforce_image_bytes(conn, image.project, image.id, facts[0])
            os.rename(landing.path, final)  # inside: a delete waits, then sees the file
            if not image_dao.activate(conn, image.id, status, facts):
                final.unlink(missing_ok=True)
                raise Cancelled()
            active = image_dao.by_id(conn, image.id)
        assert active is not None
        return active

    def room(self, image: image_dao.ImageRow) -> quotas.ImageRoom:
        """What images_gb leaves the image now, beside the project's other images and the
        bytes its admitted uploads reserve."""
        with self.desk.lock:
            return self._room(image)

    def _room(self, image: image_dao.ImageRow) -> quotas.ImageRoom:
        """room(), the caller holding the desk's lock (an upload that hands its reservation
        to its row waits for it: it is never counted in neither place)."""
        with self._db.read() as conn:
            room = quotas.image_room(conn, image.project, image.id)
        return replace(room, others=room.others + self.desk.reserved(image.project, image.id))

    def report(self, image: image_dao.ImageRow, status: str, done: int,
               total: int | None) -> quotas.ImageRoom:
        """Record progress (so other uploads count these bytes against images_gb); what the
        quota leaves the image now. Raises: Cancelled when the image was deleted or failed
        meanwhile."""
        with self._db.write() as conn:
            if not image_dao.set_progress(conn, image.id, status, done, total):
                raise Cancelled()
        return self.room(image)

    def fail(self, image: image_dao.ImageRow, status: str, code: str, message: str) -> None:
        """Leave the image in error with code (unless it was deleted or moved on)."""
        with self._db.write() as conn:
            image_dao.set_status(conn, image.id, "error", (status,), (code, message))


def _code_of(exc: errors.ApiError) -> str:
    """The image's error code for a refusal: an incomplete body says what happened to it."""
    return UPLOAD_INCOMPLETE if isinstance(exc, errors.IncompleteBody) else exc.code
