"""Imports of images from http(s) URLs, run as tasks: the image is `importing` with its progress
until the file is in place (`active`) or the import failed (`error` with a code). Deleting the
image cancels its import; its deadline closes its connection; a project downloads at most
IAAS_PROJECT_MAX_IMPORTS at once."""
from __future__ import annotations

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
from src.utils.clock import utc_now
from src.utils.cutoff import Cutoff, Pace, Reason

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 60.0  # a server that sends nothing for this long has dropped the download
WAIT_FOR_SHARE_S = 2.0  # an import whose project downloads its share already looks again then
UNEXPECTED = "The import failed unexpectedly; see the server log."
CANCELLED = "The image was deleted during its import."
TIMED_OUT = "The import ran past its deadline (IAAS_IMPORT_TIMEOUT); its connection was closed."
# Members read one message for every failed download: which of refused, timed out, too slow or
# an HTTP status it was would map the networks an import can reach. The server's log has it.
DOWNLOAD_FAILED = ("The image could not be downloaded from its URL (no answer, an error status, "
                   "a connection that broke off or came too slowly); the server's log has why.")
REDIRECT_REFUSED = "A redirect led to a URL that imports may not fetch."
REDIRECTS_EXCEEDED = f"More than {fetch.MAX_REDIRECTS} redirects."


def import_policy(config: Config) -> fetch.Policy:
    """What URL imports may reach, from the settings."""
    return fetch.Policy(allow_private=config.import_allow_private,
                        ports=config.import_port_ranges, deny=config.import_deny_networks)


class ImageImporter:
    """The API's side: check the URL, record the image and its task, hand the task on."""

    def __init__(self, db: Database, images: ImageService, executor: Executor,
                 config: Config) -> None:
        self._db = db
        self._images = images
        self._executor = executor
        self._policy = import_policy(config)

    def start(self, spec: NewImage, caller: Principal,
              request_id: str | None = None) -> image_dao.ImageRow:
        """Record the image (importing) and its import task, and queue the download.

        Raises: UrlNotAllowed (checked now: the host's every address), Forbidden, NameConflict,
        QuotaExceeded (images).
        """
        assert spec.url is not None
        try:
            fetch.check(spec.url, self._policy)
        except fetch.Refused as exc:
            raise errors.UrlNotAllowed(url=spec.url, reason=str(exc)) from None
        visibility = access.image_visibility(caller, spec.visibility)
        image = self._images.new_row(spec, caller, visibility, "import")
        task = replace(new_task_row(None, "import", request_id, image.project), image_id=image.id,
                       executor=self._executor.name)
        image = replace(image, task_id=task.id, bytes_done=0)  # progress shows from the start
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
        self._policy = import_policy(config)
        self._pace = Pace(config.import_header_timeout_s, config.import_min_bytes,
                          config.import_rate_window_s)
        self._project_max = config.project_max_imports

    def wait_s(self, conn: sqlite3.Connection, task: task_dao.TaskRow) -> float | None:
        """Seconds a queued import must wait before it may start, its project downloading its
        IAAS_PROJECT_MAX_IMPORTS already (counted in the transaction that would start it, so
        two workers cannot both take the last place); None: it may start now."""
        if task_dao.count_running(conn, task.project, "import") < self._project_max:
            return None
        return WAIT_FOR_SHARE_S

    def run_task(self, image_id: str | None, again: bool) -> None:
        """An import task's work; again: an earlier attempt was cut short (its worker died), so
        its partial file goes first. Raises: TaskFailed."""
        with self._db.read() as conn:
            image = image_dao.by_id(conn, image_id) if image_id else None
        if image is None or image.status != "importing":
            raise TaskFailed("cancelled", CANCELLED)
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
            raise TaskFailed("cancelled", CANCELLED) from None
        except errors.ApiError as exc:  # the intake left the image in error with this code
            raise TaskFailed("image_too_large" if exc.code == "body_too_large" else exc.code,
                             exc.message) from None
        except Exception:  # a bug, or a library's surprise: the image must not stay importing
            log.exception("the import of image %s failed unexpectedly", image.id)
            self._intake.fail(image, "importing", "internal_error", UNEXPECTED)
            raise TaskFailed("internal_error", UNEXPECTED) from None

    def _download(self, image: image_dao.ImageRow) -> None:
        """Raises: TaskFailed (url_not_allowed, download_failed, too_many_redirects,
        image_too_large, task_timeout, cancelled), and what Intake.land raises."""
        assert image.source_url is not None
        with Cutoff(self._pace, lambda: self._why_stop(image)) as cutoff:
            try:
                download = fetch.open_url(image.source_url, self._policy, cutoff,
                                          timeout_s=READ_TIMEOUT_S)
            except fetch.Refused as exc:
                log.warning("import of image %s: a redirect was refused: %s", image.id, exc)
                raise TaskFailed("url_not_allowed", REDIRECT_REFUSED) from None
            except fetch.Failed as exc:
                raise _failure(image, exc) from None
            with download:
                total = download.length
                if total is not None and total > self._intake.max_bytes:
                    raise TaskFailed("image_too_large", f"The image has {total} bytes, more "
                                     f"than IAAS_IMAGE_MAX_BYTES ({self._intake.max_bytes}).")
                self._reserve(image, total)
                self._intake.land(image, "importing",
                                  lambda landing: _pour(image, download, landing), total)

    def _why_stop(self, image: image_dao.ImageRow) -> Reason | None:
        """Why the download must stop now, whichever process ended its task: the deadline
        passed, the task was ended (the sweep), or the image deleted. Asked every second."""
        with self._db.read() as conn:
            task = task_dao.get(conn, image.task_id) if image.task_id else None
            current = image_dao.by_id(conn, image.id)
        if task is not None and task.status != "running":
            return (task.error_code or "cancelled", task.error_message or CANCELLED)
        if current is None or current.status != "importing":
            return ("cancelled", CANCELLED)
        if task is not None and task.deadline is not None and task.deadline <= utc_now():
            return ("task_timeout", TIMED_OUT)
        return None

    def _reserve(self, image: image_dao.ImageRow, total: int | None) -> None:
        """Hold the announced size against the project's images_gb quota.

        Raises: TaskFailed (quota_exceeded, cancelled).
        """
        try:
            with self._db.write() as conn:
                quotas.enforce_image_bytes(conn, image.project, image.id, total or 0)
                if not image_dao.set_progress(conn, image.id, "importing", 0, total):
                    raise TaskFailed("cancelled", CANCELLED)
        except errors.QuotaExceeded as exc:
            raise TaskFailed("quota_exceeded", exc.message) from None


def _failure(image: image_dao.ImageRow, exc: fetch.Failed) -> TaskFailed:
    """The task's failure for a download's: our own words, the detail for the log only."""
    member_message = {"download_failed": DOWNLOAD_FAILED,
                      "too_many_redirects": REDIRECTS_EXCEEDED}.get(exc.code)
    if member_message is None:  # the cutoff's reason: a deadline or a cancel, in our words
        return TaskFailed(exc.code, exc.message)
    log.warning("import of image %s (task %s) failed (%s): %s", image.id, image.task_id,
                exc.code, exc.message)
    return TaskFailed(exc.code, member_message)


def _pour(image: image_dao.ImageRow, download: fetch.Download, landing: Landing) -> None:
    """The download's body into landing. Raises: TaskFailed (download_failed when the
    connection drops, stalls or crawls before the body is whole; the cutoff's reason)."""
    while True:
        try:
            chunk = download.read1(CHUNK)  # what has come, so progress moves as it comes
        except fetch.Failed as exc:
            raise _failure(image, exc) from None
        if not chunk:
            return
        landing.write(chunk)  # a full disk here is this server's failure, not the download's
