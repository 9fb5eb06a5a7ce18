"""Per-project quotas: instances, vCPUs, RAM (MiB), GPUs, disk and image GiB, and counts of
images, keypairs and tokens, checked inside the transaction that takes them."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from src import errors
from src.database import images as image_dao
from src.database import projects as project_dao
from src.database.db import Database
from src.services.rules import access
from src.services.rules.access import Principal
from src.vocabulary import QUOTA_RESOURCES


def enforce(conn: sqlite3.Connection, project: str, requested: dict[str, int]) -> None:
    """Raises: QuotaExceeded naming the first resource the request would take over its limit."""
    limits = project_dao.limits(conn, project) or {}
    if all(limit is None for limit in limits.values()):
        return
    in_use = project_dao.usage(conn, project)
    for resource in QUOTA_RESOURCES:
        limit = limits.get(resource)
        wanted = requested.get(resource, 0)
        if limit is not None and wanted and in_use[resource] + wanted > limit:
            raise errors.QuotaExceeded(resource=resource, limit=limit,
                                       in_use=in_use[resource], requested=wanted)


@dataclass(frozen=True)
class ImageRoom:
    """What a project's images_gb leaves for one of its images: limit_gb (None: no limit) less
    what its other images hold (others, bytes)."""

    limit_gb: int | None
    others: int

    @property
    def left(self) -> int | None:
        """Bytes the image may hold (None: any number)."""
        return None if self.limit_gb is None else self.limit_gb * project_dao.GIB - self.others

    def check(self, wanted: int) -> None:
        """Raises: QuotaExceeded (images_gb, in GiB rounded up) when wanted bytes do not fit."""
        left = self.left
        if left is not None and wanted > left:
            raise self.refusal(wanted)

    def refusal(self, wanted: int) -> errors.ApiError:
        """The QuotaExceeded that wanted bytes get."""
        return errors.QuotaExceeded(resource="images_gb", limit=self.limit_gb,
                                    in_use=-(-self.others // project_dao.GIB),
                                    requested=-(-wanted // project_dao.GIB))


def image_room(conn: sqlite3.Connection, project: str, image_id: str) -> ImageRoom:
    """The room images_gb leaves the image beside the project's other images (stored, or
    arriving: what they announced or, when they did not, what has arrived so far)."""
    limit = (project_dao.limits(conn, project) or {}).get("images_gb")
    if limit is None:
        return ImageRoom(None, 0)
    return ImageRoom(limit, image_dao.stored_bytes(conn, project, except_id=image_id))


def enforce_image_bytes(conn: sqlite3.Connection, project: str, image_id: str,
                        wanted: int) -> None:
    """Whether the project may store wanted bytes for this image beside its other images.

    Raises: QuotaExceeded (images_gb, in GiB rounded up).
    """
    image_room(conn, project, image_id).check(wanted)


@dataclass(frozen=True)
class ProjectQuota:
    """A project's limits (None: unlimited) and what it uses of each resource."""

    project: str
    limits: project_dao.Limits
    in_use: dict[str, int]


class QuotaService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def show(self, project: str, caller: Principal | None = None) -> ProjectQuota:
        """Limits and usage; another project is not there for a member. Raises: ProjectNotFound."""
        if caller is not None:
            access.check_project(caller, project)
        with self._db.read() as conn:
            limits = project_dao.limits(conn, project)
            if limits is None:
                raise errors.ProjectNotFound(project=project)
            return ProjectQuota(project, limits, project_dao.usage(conn, project))

    def list(self) -> list[ProjectQuota]:
        """Every project with its limits and usage."""
        with self._db.read() as conn:
            names = project_dao.names(conn)
        return [self.show(name) for name in names]

    def update(self, project: str, changes: dict[str, int | None]) -> ProjectQuota:
        """Set some limits (None: unlimited). Raises: ProjectNotFound."""
        with self._db.write() as conn:
            if not project_dao.exists(conn, project):
                raise errors.ProjectNotFound(project=project)
            project_dao.set_limits(conn, project, changes)
        return self.show(project)
