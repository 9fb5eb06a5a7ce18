"""Every decision about who may do what: route roles, and which project's things a caller sees.

Admins act in every project; members only in their own, and another project's VMs, tasks,
quotas, private images and keypairs do not exist for them (404, never 403, so existence is not
revealed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from src import errors
from src.vocabulary import PUBLIC_IMAGES_OWNER


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, project and role."""

    token_id: str
    project: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def authorize(caller: Principal | None, access: str) -> None:
    """Whether caller may call a route of this access level (public, member or admin).

    Raises: Unauthorized (no valid token), Forbidden (the route needs an admin).
    """
    if access == "public":
        return
    if caller is None:
        raise errors.Unauthorized()
    if access == "admin" and not caller.is_admin:
        raise errors.Forbidden()


def scope(caller: Principal) -> str | None:
    """The one project whose things caller sees; None means every project."""
    return None if caller.is_admin else caller.project


def vm_scope(caller: Principal, vm: str, project: str | None = None) -> str | None:
    """The one project in which caller's lookup of vm searches (None: every project); project
    narrows an admin's lookup.

    Raises: VmNotFound when a member names another project (there is no such VM for them).
    """
    if caller.is_admin:
        return project
    if project is not None and project != caller.project:
        raise errors.VmNotFound(vm=vm)
    return caller.project


def sees_project(caller: Principal, project: str | None) -> bool:
    return caller.is_admin or project == caller.project


def check_project(caller: Principal, project: str) -> None:
    """Raises: ProjectNotFound when caller may not see project (it is not there for them)."""
    if not sees_project(caller, project):
        raise errors.ProjectNotFound(project=project)


def sees_internals(caller: Principal | None) -> bool:
    """Whether caller may read host detail (paths, libvirt's words, health errors): admins."""
    return caller is not None and caller.is_admin


def check_token_grant(caller: Principal, project: str, role: str) -> None:
    """Whether caller may make a token of project and role: admins any; members only member
    tokens of their own project, so no token can reach further than the one that made it.

    Raises: Forbidden.
    """
    if caller.is_admin:
        return
    if project != caller.project or role != "member":
        raise errors.Forbidden("Members may create only member tokens of their own project.")


def sees_token(caller: Principal, lineage: list[str]) -> bool:
    """Admins see every token; members their own and those made from it, at any depth (others
    are 404). lineage: the token's id and its makers' up the chain."""
    return caller.is_admin or caller.token_id in lineage


def tokens_end_with_maker(caller: Principal) -> bool:
    """Whether the tokens caller makes may not outlive it (they expire by its expiry at the
    latest, and revoking it revokes them): a member's do, so a member cannot keep access the
    project's admins took away; an admin's stand on their own, so rotating an admin token does
    not sign out every token it handed out."""
    return not caller.is_admin


def require_admin(caller: Principal) -> None:
    """Raises: Forbidden unless caller is an admin."""
    if not caller.is_admin:
        raise errors.Forbidden()


def image_visibility(caller: Principal, asked: str | None) -> str:
    """The visibility of an image caller makes: admins' are public unless they ask otherwise,
    members' private.

    Raises: Forbidden when a member asks for a public image.
    """
    if caller.is_admin:
        return asked or "public"
    if asked == "public":
        raise errors.Forbidden("Only admins may make an image public.")
    return "private"


class OwnedImage(Protocol):
    """What deciding an image's owner reads: whose it is and who may see it."""

    @property
    def project(self) -> str: ...

    @property
    def visibility(self) -> str: ...


def check_image_owner(caller: Principal, image: OwnedImage) -> None:
    """Whether caller may change (upload to, delete) an image it can see: admins any; members
    only their own project's private ones. Decided by role and visibility, never by project
    alone: a public image is no member's, whichever project made it.

    Raises: Forbidden for a member and a public (or another project's) image.
    """
    if caller.is_admin:
        return
    if image.visibility == "public" or image.project != caller.project:
        raise errors.Forbidden("Only admins may change a public image.")


def image_owner(caller: Principal, visibility: str) -> str:
    """The project a new image of visibility is filed under: a public one under the reserved
    owner no token belongs to, a private one under caller's project."""
    return PUBLIC_IMAGES_OWNER if visibility == "public" else caller.project


def own_project(caller: Principal) -> str | None:
    """The project a request of caller touched when its answer names none: a member's own; an
    admin's none (flavors, hosts, refusals), so that no member reads an admin's trail."""
    return None if caller.is_admin else caller.project


def keypair_scope(caller: Principal, keypair: str, project: str | None) -> str:
    """The project whose keypair caller's lookup means: its own unless an admin names another.

    Raises: KeypairNotFound when a member names another project.
    """
    if project is None or project == caller.project:
        return caller.project
    if not caller.is_admin:
        raise errors.KeypairNotFound(keypair=keypair)
    return project


def volume_scope(caller: Principal, volume: str, project: str | None = None) -> str | None:
    """The project in which caller's lookup of volume searches (None: every project).

    Raises: VolumeNotFound when a member names another project.
    """
    if caller.is_admin:
        return project
    if project is not None and project != caller.project:
        raise errors.VolumeNotFound(volume=volume)
    return caller.project
