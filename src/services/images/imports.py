"""Imports of images from http(s) URLs, run as tasks: the image is `importing` with its progress
until the file is in place (`active`) or the import failed (`error` with a code). Deleting the
image cancels its import."""
from __future__ import annotations

import http.client
import logging
import sqlite3
from dataclasses import replace

from src import errors
from src.config import Config
from src.database import images as image_dao
from src.database import tasks as task_dao
from src.database.db import Database
from src.services.images.catalog import ImageService, NewImage
from src.services.images.files import CHUNK, Intake, Landing
from src.services.rules import access, quotas
from src.services.rules.access import Principal
from src.services.tasks.runner import Executor, TaskFailed, new_task_row
from src.utils import fetch

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 60.0  # a server that sends nothing for this long has dropped the download
UNEXPECTED = "The import failed unexpectedly; see the server log."


class ImageImporter:
    """The API's side: check the URL, record the image and its task, hand the task on."""

    def __init__(self, db: Database, images: ImageService, executor: Executor,
                 config: Config) -> None:
        self._db = db
        self._images = images
        self._executor = executor
        self._allow_private = config.import_allow_private

    def start(self, spec: NewImage, caller: Principal,
              request_id: str | None = None) -> image_dao.ImageRow:
        """Record the image (importing) and its import task, and queue the download.

        Raises: UrlNotAllowed (checked now: the host's every address), Forbidden, NameConflict,
        QuotaExceeded (images).
        """
        assert spec.url is not None
        try:
            fetch.check(spec.url, self._allow_private)
        except fetch.Refused as exc:
            raise errors.UrlNotAllowed(url=spec.url, reason=str(exc)) from None
        visibility = access.image_visibility(caller, spec.visibility)
        image = self._images.new_row(spec, caller, visibility, "import")
        task = replace(new_task_row(None, "import", request_id, image.project), image_id=image.id,
                       executor=self._executor.name)
        image = replace(image, task_id=task.id)
        try:
            with self._db.write() as conn:
                quotas.enforce(conn, image.project, {"images": 1})
                image_dao.insert(conn, image)
                task_dao.insert(conn, task)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="image", name=image.name) from None
        self._executor.submit(task)
        return image


class ImageDownloads:
    """The task's side, in whichever process runs it: download, check, put the file in place."""

    def __init__(self, db: Database, images: ImageService, intake: Intake,
                 config: Config) -> None:
        self._db = db
        self._images = images
        self._intake = intake
        self._allow_private = config.import_allow_private

    def run_task(self, image_id: str | None, again: bool) -> None:
        """An import task's work; again: an earlier attempt was cut short (its worker died), so
        its partial file goes first. Raises: TaskFailed."""
        with self._db.read() as conn:
            image = image_dao.by_id(conn, image_id) if image_id else None
        if image is None or image.status != "importing":
            raise TaskFailed("cancelled", "The image was deleted during its import.")
        self.run(image, again)

    def expire(self, image_id: str | None) -> None:
        """The import never started: its image is left in error."""
        with self._db.read() as conn:
            image = image_dao.by_id(conn, image_id) if image_id else None
        if image is not None:
            self._intake.fail(image, "importing", "task_expired", "The import never started.")

    def run(self, image: image_dao.ImageRow, again: bool = False) -> None:
        """The task's work: download, check and put the file in place (after removing the
        partial file of an attempt cut short, when again).

        Raises: TaskFailed with the code the image is left in error with.
        """
        try:
            if again:
                self._images.remove_partials(image.id)
            self._download(image)
        except TaskFailed as exc:
            self._intake.fail(image, "importing", exc.code, exc.message)
            raise
        except errors.ImageNotFound:
            raise TaskFailed("cancelled", "The image was deleted during its import.") from None
        except errors.ApiError as exc:  # the intake left the image in error with this code
            raise TaskFailed("image_too_large" if exc.code == "body_too_large" else exc.code,
                             exc.message) from None
        except Exception:  # a bug, or a library's surprise: the image must not stay importing
            log.exception("the import of image %s failed unexpectedly", image.id)
            self._intake.fail(image, "importing", "internal_error", UNEXPECTED)
            raise TaskFailed("internal_error", UNEXPECTED) from None

    def _download(self, image: image_dao.ImageRow) -> None:
        """Raises: TaskFailed (url_not_allowed, download_failed, too_many_redirects,
        image_too_large), and what Intake.land raises."""
        assert image.source_url is not None
        try:
            response = fetch.open_url(image.source_url, allow_private=self._allow_private,
                                      timeout_s=READ_TIMEOUT_S)
        except fetch.Refused as exc:
            raise TaskFailed("url_not_allowed", f"A redirect was refused: {exc}") from None
        except fetch.Failed as exc:
            raise TaskFailed(exc.code, exc.message) from None
        with response:
            total = response.length
            if total is not None and total > self._intake.max_bytes:
                raise TaskFailed("image_too_large", f"The image has {total} bytes, more than "
                                 f"IAAS_IMAGE_MAX_BYTES ({self._intake.max_bytes}).")
            self._reserve(image, total)
            self._intake.land(image, "importing", lambda landing: _pour(response, landing),
                              total)

    def _reserve(self, image: image_dao.ImageRow, total: int | None) -> None:
        """Hold the announced size against the project's images_gb quota.

        Raises: TaskFailed (quota_exceeded, cancelled).
        """
        try:
            with self._db.write() as conn:
                quotas.enforce_image_bytes(conn, image.project, image.id, total or 0)
                if not image_dao.set_progress(conn, image.id, "importing", 0, total):
                    raise TaskFailed("cancelled", "The image was deleted during its import.")
        except errors.QuotaExceeded as exc:
            raise TaskFailed("quota_exceeded", exc.message) from None


def _pour(response: http.client.HTTPResponse, landing: Landing) -> None:
    """The response's body into landing. Raises: TaskFailed (download_failed) when the
    connection drops or stalls before the body is whole."""
    total = response.length
    while True:
        try:
            chunk = response.read1(CHUNK)  # what has come, so progress moves as it comes
        except (OSError, http.client.HTTPException) as exc:
            raise TaskFailed("download_failed", f"The download broke off after {landing.size} "
                             f"bytes: {exc or type(exc).__name__}") from None
        if not chunk:
            break
        landing.write(chunk)  # a full disk here is this server's failure, not the download's
    if total is not None and landing.size < total:
        raise TaskFailed("download_failed", f"The connection closed after {landing.size} of "
                         f"{total} bytes.")
