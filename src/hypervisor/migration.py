"""Moving a domain to another libvirt host: peer-to-peer live migration (storage copied when the
hosts do not share it), its job's progress, aborting it, and the definitions it starts from."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection

# The source's libvirtd dials the target itself (p2p), the domain becomes persistent there and
# leaves the source's definitions, and a guest that dirties memory faster than the link carries
# it is slowed down until the copy converges (auto-converge).
_LIVE = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
         | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
         | libvirt.VIR_MIGRATE_AUTO_CONVERGE)
# Storage that is not shared: each disk's top layer is mirrored to a file the target has ready
# over the same backing chain (the layers below are there already: incremental).
_COPY_TOPS = libvirt.VIR_MIGRATE_NON_SHARED_INC
_ACTIVE_JOB = libvirt.VIR_DOMAIN_JOB_UNBOUNDED
_NO_JOB = libvirt.VIR_DOMAIN_JOB_NONE
T = TypeVar("T")


@dataclass(frozen=True)
class MigrationRequest:
    """What one migration sends where."""

    target_uri: str  # the target's libvirt URI, as the source's libvirtd dials it
    dest_xml: str  # the domain as the target runs it (its files, network, CPUs)
    persist_xml: str | None = None  # as the target keeps it (else the source's own, unchanged)
    copy_disks: tuple[str, ...] = ()  # target devs whose top layer is copied (none: shared)
    data_uri: str | None = None  # where the source's QEMU sends memory and disks (tcp://host)
    max_mibps: int = 0  # 0: no bandwidth limit


@dataclass(frozen=True)
class JobProgress:
    """A migration job as its source sees it now (bytes of memory and disks together)."""

    active: bool
    data_total: int = 0
    data_remaining: int = 0
    data_processed: int = 0
    memory_bps: int = 0
    disk_bps: int = 0
    downtime_ms: int | None = None  # known once it completed
    elapsed_ms: int = 0


def _progress(stats: dict[str, Any]) -> JobProgress:
    return JobProgress(active=stats.get("type", _NO_JOB) == _ACTIVE_JOB,
                       data_total=int(stats.get("data_total", 0)),
                       data_remaining=int(stats.get("data_remaining", 0)),
                       data_processed=int(stats.get("data_processed", 0)),
                       memory_bps=int(stats.get("memory_bps", 0)),
                       disk_bps=int(stats.get("disk_bps", 0)),
                       downtime_ms=int(stats["downtime"]) if "downtime" in stats else None,
                       elapsed_ms=int(stats.get("time_elapsed", 0)))


def _unless_unsupported(call: Callable[[], T], instead: T) -> T:
    """call(), or instead from a driver that has no jobs at all (the test driver)."""
    try:
        return call()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return instead


class Migrations:
    """Raises: HypervisorError (and DomainNotFound, HypervisorUnavailable) from every call."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def migratable_xml(self, uuid: str, live: bool) -> str:
        """The definition to send: the running one (live), or the persistent one, both in the
        form libvirt accepts on another host."""
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | (0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
        xml: str = self.connection.on_domain(uuid, lambda d: d.XMLDesc(flags))
        return xml

    def migrate(self, uuid: str, request: MigrationRequest) -> None:
        """Live-migrate the running (or paused) domain; returns once it runs on the target and
        is gone from here. Blocks for the whole copy: abort_job from another thread stops it.

        Raises: HypervisorError with libvirt's reason (the domain then still runs here).
        """
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: request.dest_xml}
        if request.persist_xml:
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = request.persist_xml
        if request.copy_disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(request.copy_disks)
        if request.data_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = request.data_uri
        if request.max_mibps:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = request.max_mibps
        flags = _LIVE | (_COPY_TOPS if request.copy_disks else 0)
        self.connection.on_domain(
            uuid, lambda d: d.migrateToURI3(request.target_uri, params, flags))

    def job(self, uuid: str, completed: bool = False) -> JobProgress | None:
        """The domain's current job (or, completed, the last one that ended here: an incoming
        migration's downtime is known on its target); None when there is no such domain."""
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0
        stats = self.connection.on_domain(uuid, lambda d: _unless_unsupported(
            lambda: d.jobStats(flags), None), missing=None)
        return None if stats is None else _progress(stats)

    def abort_job(self, uuid: str) -> bool:
        """Abort the domain's running job (a migration: it keeps running here); whether one
        was running. A domain that is gone, or has no job any more, is fine."""
        def abort(domain: libvirt.virDomain) -> bool:
            if _unless_unsupported(lambda: domain.jobInfo()[0], _NO_JOB) == _NO_JOB:
                return False
            try:
                domain.abortJob()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise  # (invalid: the job ended meanwhile)
            return True
        return bool(self.connection.on_domain(uuid, abort, missing=False))
