"""The host-side work of volume tasks: make, remove, grow, snapshot and revert a volume, and
attach or detach it. Each step may run again (a redelivered task) and changes nothing twice;
a failure half-way leaves the volume, its files and the domain as they were."""
from __future__ import annotations

import logging
from typing import Any

from src.database import snapshots as snapshot_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.domain_xml import DiskSpec, render_disk
from src.hypervisor.errors import (
    DeviceNotReleased,
    HypervisorError,
    HypervisorUnavailable,
)
from src.services.hosts.registry import Host, HostRegistry
from src.services.images.catalog import ImageService
from src.services.tasks.runner import TaskFailed
from src.services.volumes.layers import FORMAT, VolumeLayers, serial_of
from src.services.volumes.sources import SourceFinder
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

LIVE_STATES = ("running", "paused", "blocked", "paused_by_hypervisor")


def disk_spec(path: str, attachment: volume_dao.AttachmentRow, multiattach: bool) -> DiskSpec:
    return DiskSpec(path=path, format=FORMAT, target_dev=attachment.device,
                    serial=serial_of(attachment.volume_id), read_only=attachment.read_only,
                    shareable=multiattach)


class VolumeWork:
    def __init__(self, db: Database, hosts: HostRegistry, images: ImageService,
                 layers: VolumeLayers, sources: SourceFinder, detach_timeout_s: float) -> None:
        self._db = db
        self._hosts = hosts
        self._images = images
        self._layers = layers
        self._sources = sources
        self._detach_timeout_s = detach_timeout_s

    def run(self, action: str, volume_id: str, vm_id: str | None, args: dict[str, Any]) -> None:
        """Do one volume task's work. Raises: TaskFailed, HypervisorUnavailable."""
        steps = {"volume_create": lambda: self.make(volume_id),
                 "volume_delete": lambda: self.remove(volume_id),
                 "volume_resize": lambda: self.grow(volume_id, int(args["size_gb"]),
                                                    int(args.get("from_gb", 0))),
                 "volume_snapshot": lambda: self.snapshot(volume_id, args["snapshot_id"]),
                 "volume_revert": lambda: self.revert(volume_id, args["snapshot_id"]),
                 "snapshot_delete": lambda: self.delete_snapshot(volume_id, args["snapshot_id"]),
                 "attach": lambda: self.attach(volume_id, vm_id or ""),
                 "detach": lambda: self.detach(volume_id, vm_id or "")}
        steps[action]()

    def expire(self, action: str, volume_id: str, vm_id: str | None, args: dict[str, Any],
               reason: tuple[str, str]) -> None:
        """A task that never ran (it expired in its queue, or a restart cut it short before
        it did anything lasting): what it held goes back, and the rows say so."""
        now = utc_now()
        with self._db.write() as conn:
            if action == "volume_create":
                volume_dao.set_status(conn, volume_id, "error", now, reason,
                                      only_from=("creating",))
            elif action == "volume_resize" and args.get("from_gb"):
                volume_dao.set_size(conn, volume_id, int(args["from_gb"]), now)
            elif action == "volume_snapshot":
                snapshot_dao.delete(conn, args["snapshot_id"])
            elif action == "snapshot_delete":
                snapshot_dao.set_status(conn, args["snapshot_id"], "available")
            elif action == "attach" and vm_id:
                attachment = volume_dao.attachment(conn, volume_id, vm_id)
                if attachment is not None and attachment.status == "attaching":
                    volume_dao.detach(conn, volume_id, vm_id)
            elif action == "detach" and vm_id:
                volume_dao.set_attachment_status(conn, volume_id, vm_id, "attached")

    def make(self, volume_id: str) -> None:
        """The volume's first layer: empty, or a full copy of its image."""
        row, host = self._volume(volume_id)
        if row.status == "available":
            return  # made by an earlier delivery of this task
        try:
            source = (self._sources.of(host, row.source_image_id)
                      if row.source_image_id else None)
            top = self._layers.make_first(host, row.id, row.size_gb, source)
        except HypervisorUnavailable:
            raise
        except Exception as exc:
            self._quietly_remove_layers(host, row.id)
            failure = _failure(exc, "volume_create_failed", "The volume could not be made")
            self._set_error(row.id, failure)
            raise failure from exc
        with self._db.write() as conn:
            volume_dao.set_top(conn, row.id, top, row.size_gb, utc_now())
            volume_dao.set_status(conn, row.id, "available", utc_now(), only_from=("creating",))

    def remove(self, volume_id: str) -> None:
        """Remove the volume's files (every layer, its snapshots' too), then its rows."""
        with self._db.read() as conn:
            row = volume_dao.get(conn, volume_id)
        if row is None:
            return
        host = self._hosts.get(row.host)
        with self._db.write() as conn:
            volume_dao.set_status(conn, row.id, "deleting", utc_now())
        try:
            self._layers.remove_all(host, row.id)
        except HypervisorUnavailable:
            raise
        except HypervisorError as exc:
            failure = TaskFailed("volume_delete_failed", f"Its files could not be removed: {exc}")
            self._set_error(row.id, failure)
            raise failure from exc
        with self._db.write() as conn:
            snapshot_dao.delete_of(conn, row.id)
            volume_dao.delete(conn, row.id)

    def grow(self, volume_id: str, size_gb: int, from_gb: int) -> None:
        row, host = self._volume(volume_id)
        try:
            self._layers.grow(host, row.top_layer or "", size_gb)
        except HypervisorUnavailable:
            raise
        except HypervisorError as exc:
            with self._db.write() as conn:  # the room it held for the growth goes back
                volume_dao.set_size(conn, row.id, from_gb or row.size_gb, utc_now())
            raise TaskFailed("volume_resize_failed", f"The volume could not grow: {exc}") from exc

    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        """Freeze the top layer as the snapshot's and stack a new top on it; stopped VMs the
        volume is attached to read the new top from their next start."""
        row, host = self._volume(volume_id)
        with self._db.read() as conn:
            snapshot = snapshot_dao.get(conn, snapshot_id)
        if snapshot is None or snapshot.status == "available":
            return  # removed meanwhile, or made by an earlier delivery
        frozen = row.top_layer or ""
        try:
            top = self._layers.stack(host, row.id, frozen, row.size_gb)
            self._follow(host, row, top)
        except HypervisorUnavailable:
            raise
        except Exception as exc:
            with self._db.write() as conn:
                snapshot_dao.delete(conn, snapshot_id)
            self._follow_quietly(host, row, frozen)  # the VMs read the old top again
            self._quietly_prune(host, row.id, frozen)
            raise _failure(exc, "snapshot_failed", "The snapshot could not be made") from exc
        with self._db.write() as conn:
            snapshot_dao.made(conn, snapshot_id, frozen)
            volume_dao.set_top(conn, row.id, top, row.size_gb, utc_now())

    def revert(self, volume_id: str, snapshot_id: str) -> None:
        """A new top on the snapshot's layer; the old top goes unless a snapshot needs it."""
        row, host = self._volume(volume_id)
        with self._db.read() as conn:
            snapshot = snapshot_dao.get(conn, snapshot_id)
        if snapshot is None or snapshot.layer is None:
            raise TaskFailed("snapshot_gone", "The snapshot was removed before the revert ran.")
        try:
            top = self._layers.stack(host, row.id, snapshot.layer, row.size_gb)
        except HypervisorUnavailable:
            raise
        except Exception as exc:
            self._quietly_prune(host, row.id, row.top_layer)
            raise _failure(exc, "revert_failed", "The volume could not be reverted") from exc
        with self._db.write() as conn:
            volume_dao.set_top(conn, row.id, top, row.size_gb, utc_now())
        self._quietly_prune(host, row.id, top)

    def delete_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        row, host = self._volume(volume_id)
        with self._db.write() as conn:
            snapshot_dao.delete(conn, snapshot_id)
        try:
            self._layers.prune(host, row.id, row.top_layer)
        except HypervisorUnavailable:
            raise
        except HypervisorError as exc:  # the row is gone; the next prune takes the file
            raise TaskFailed("layer_removal_failed", f"Its file could not be removed: {exc}"
                             ) from exc

    def attach(self, volume_id: str, vm_id: str) -> None:
        """Plug the volume into the VM's domain (live too when it runs); on failure the
        domain is as it was and the attachment is gone."""
        row, host = self._volume(volume_id)
        with self._db.read() as conn:
            attachment = volume_dao.attachment(conn, volume_id, vm_id)
        if attachment is None:
            raise TaskFailed("attachment_gone", "The attachment was removed before it ran.")
        if attachment.status == "attached":
            return
        domains = host.hypervisor
        try:
            held = {disk.target_dev for disk in domains.disk_targets(vm_id, live=False)}
            if attachment.device not in held:  # an earlier delivery may have plugged it
                xml = render_disk(disk_spec(self._layers.path(host, row.top_layer or ""),
                                            attachment, row.multiattach))
                domains.attach_disk(vm_id, xml, live=self._runs(host, vm_id))
        except HypervisorUnavailable:
            raise
        except Exception as exc:
            self._unplug_quietly(host, vm_id, attachment.device)
            with self._db.write() as conn:
                volume_dao.detach(conn, volume_id, vm_id)
            raise _failure(exc, "attach_failed", "The volume could not be attached") from exc
        with self._db.write() as conn:
            volume_dao.set_attachment_status(conn, volume_id, vm_id, "attached")

    def detach(self, volume_id: str, vm_id: str) -> None:
        """Unplug the volume (the guest must let go within the timeout); the attachment ends
        only when the disk has left the domain, and stays recorded otherwise."""
        _row, host = self._volume(volume_id)
        with self._db.read() as conn:
            attachment = volume_dao.attachment(conn, volume_id, vm_id)
        if attachment is None:
            return
        try:
            host.hypervisor.detach_disk(vm_id, attachment.device,
                                                live=self._runs(host, vm_id),
                                                timeout_s=self._detach_timeout_s)
        except HypervisorUnavailable:
            raise
        except DeviceNotReleased as exc:
            with self._db.write() as conn:
                volume_dao.set_attachment_status(conn, volume_id, vm_id, "attached")
            raise TaskFailed("detach_timeout", (
                f"The guest did not release {attachment.device} within "
                f"{self._detach_timeout_s:g} s; the volume stays attached.")) from exc
        except HypervisorError as exc:
            with self._db.write() as conn:
                volume_dao.set_attachment_status(conn, volume_id, vm_id, "attached")
            raise TaskFailed("detach_failed", f"The volume could not be detached: {exc}"
                             ) from exc
        with self._db.write() as conn:
            volume_dao.detach(conn, volume_id, vm_id)

    def _follow(self, host: Host, row: volume_dao.VolumeRow, top: str) -> None:
        """Point the stopped VMs the volume is attached to at its new top (running ones hold
        it read-only, and the frozen layer they read has the same bytes)."""
        with self._db.read() as conn:
            attached = volume_dao.attachments_of(conn, [row.id])[row.id]
        path = self._layers.path(host, top)
        for attachment in attached:
            host.hypervisor.set_disk_source(attachment.vm_id, attachment.device, path)

    def _follow_quietly(self, host: Host, row: volume_dao.VolumeRow, top: str) -> None:
        try:
            self._follow(host, row, top)
        except (HypervisorError, FileNotFoundError) as exc:
            log.error("pointing the VMs of volume %s back at %s failed: %s", row.id, top, exc)

    def _runs(self, host: Host, vm_id: str) -> bool:
        return host.hypervisor.power_state(vm_id) in LIVE_STATES

    def _volume(self, volume_id: str) -> tuple[volume_dao.VolumeRow, Host]:
        """Raises: TaskFailed when the volume row is gone."""
        with self._db.read() as conn:
            row = volume_dao.get(conn, volume_id)
        if row is None:
            raise TaskFailed("volume_gone", "The volume was removed while this task waited.")
        return row, self._hosts.get(row.host)

    def _set_error(self, volume_id: str, failure: TaskFailed) -> None:
        with self._db.write() as conn:
            volume_dao.set_status(conn, volume_id, "error", utc_now(),
                                  (failure.code, failure.message))

    def _unplug_quietly(self, host: Host, vm_id: str, device: str) -> None:
        try:
            disks = host.hypervisor.disk_targets(vm_id, live=False)
            if any(disk.target_dev == device for disk in disks):
                host.hypervisor.detach_disk(vm_id, device, live=False, timeout_s=0)
        except HypervisorError as exc:
            log.error("undoing the attach of %s to %s failed: %s", device, vm_id, exc)

    def _quietly_remove_layers(self, host: Host, owner: str) -> None:
        try:
            self._layers.remove_all(host, owner)
        except HypervisorError as exc:
            log.error("removing the layers of %s failed: %s", owner, exc)

    def _quietly_prune(self, host: Host, owner: str, top: str | None) -> None:
        try:
            self._layers.prune(host, owner, top)
        except HypervisorError as exc:
            log.error("pruning the layers of %s failed: %s", owner, exc)


def _failure(exc: Exception, code: str, what: str) -> TaskFailed:
    return exc if isinstance(exc, TaskFailed) else TaskFailed(code, f"{what}: {exc}")

