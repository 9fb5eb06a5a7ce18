"""Admitted uploads until their requests end: one per image, a bounded number per project and
in all (a share of the server's threads), and the bytes each announced, reserved against its
project's images_gb until the image's row counts them."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from src import errors
from src.database.images import ImageRow
from src.services.rules.access import Principal

DEFAULT_THREADS = 16  # an app no server has announced itself to (the in-process test client)


@dataclass(eq=False)
class Admission:
    """One upload's body may come: at most limit bytes of it (beyond: the answer to more),
    with its slot and its reserved bytes held until release()."""

    image: ImageRow
    caller: Principal
    length: int | None  # announced (Content-Length), or None: chunked
    limit: int
    beyond: errors.ApiError
    reserved: int  # bytes held against images_gb that the image's row does not count yet
    _desk: UploadDesk = field(repr=False)

    @property
    def image_id(self) -> str:
        return self.image.id

    @property
    def project(self) -> str:
        """Whose quota and upload slots the upload uses: its image's project."""
        return self.image.project

    def counted(self) -> None:
        """The image's row now reserves the announced bytes itself: stop holding them here."""
        self._desk.drop_reservation(self)

    def release(self) -> None:
        """Give the slot and the reservation back (the request ended, or its client left);
        a second call changes nothing."""
        self._desk.give_back(self)


class UploadDesk:
    """The uploads admitted and not ended, at most per_project of one project and a share of
    the serving threads in all; what they reserve of each project's images_gb."""

    def __init__(self, per_project: int, share: float, threads: int = DEFAULT_THREADS) -> None:
        self._per_project = per_project
        self._share = share
        self._capacity = self._of(threads)
        self.lock = threading.Lock()  # held by Intake.admit across its quota read and take()
        self._held: list[Admission] = []

    def _of(self, threads: int) -> int:
        return max(1, math.floor(threads * self._share))

    @property
    def capacity(self) -> int:
        """How many uploads may be under way at once, over every project."""
        return self._capacity

    def set_capacity(self, threads: int) -> None:
        """The server serving the app answers on this many threads; uploads may hold their
        share of them (IAAS_UPLOAD_SHARE), the rest stay for every other request."""
        with self.lock:
            self._capacity = self._of(threads)

    def reserved(self, project: str, except_image: str) -> int:
        """Bytes the project's other admitted uploads hold that no image row counts yet (the
        caller holds lock)."""
        return sum(held.reserved for held in self._held
                   if held.project == project and held.image_id != except_image)

    def take(self, admission: Admission) -> None:
        """Hold admission's slot (the caller holds lock).

        Raises: UploadInProgress (its image has one), TooManyUploads (its project has
        per_project), UploadsBusy (the server has its share).
        """
        if any(held.image_id == admission.image_id for held in self._held):
            raise errors.UploadInProgress(image=admission.image.name)
        if sum(held.project == admission.project for held in self._held) >= self._per_project:
            raise errors.TooManyUploads(project=admission.project, limit=self._per_project)
        if len(self._held) >= self._capacity:
            raise errors.UploadsBusy(limit=self._capacity)
        self._held.append(admission)

    def drop_reservation(self, admission: Admission) -> None:
        with self.lock:
            admission.reserved = 0

    def give_back(self, admission: Admission) -> None:
        with self.lock:
            if admission in self._held:
                self._held.remove(admission)
            admission.reserved = 0

    def count(self, project: str | None = None) -> int:
        """Uploads under way (of project, or in all)."""
        with self.lock:
            return sum(project is None or held.project == project for held in self._held)
