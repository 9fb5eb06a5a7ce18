"""The host side of a migrate task: carry the VM's files, move the domain (live, or stopped and
started again), then commit the rows and clean the source; or roll back so that the VM runs on
its source as before and the target keeps nothing.

Every step is recorded in the move's row before it is taken, so a step that starts again
after its process died (a redelivered message, an API restart) first finds out where the VM
really runs: the target when it runs there and not (or only paused by the switch) on the
source, else the source. It then finishes the move, or rolls it back, and never leaves two
copies running.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import replace

from src.config import Config
from src.database import gpus as gpu_dao
from src.database import host_drains as drain_dao
from src.database import images as image_dao
from src.database import snapshots as snapshot_dao
from src.database import vm_migrations as move_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.database.tasks import TaskRow
from src.database.vm_migrations import MigrationRow
from src.hypervisor.disks import CommandFailed, QemuImg
from src.hypervisor.domains import HALTED
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.hypervisor.migration import MigrationRequest
from src.hypervisor.pci import split_address
from src.hypervisor.retarget import Retarget, data_uri, retarget
from src.services.hosts.registry import HostRegistry
from src.services.images.catalog import ImageService
from src.services.motion import nics
from src.services.motion.files import (
    ROOT,
    SEED_DEVICE,
    VOLUME,
    Carrier,
    Plan,
    Sides,
    plan_of,
)
from src.services.motion.transfer import LiveTransfer, final_facts, report
from src.services.tasks.runner import TaskFailed
from src.services.vms.build_record import ImageRef
from src.services.vms.provisioning import Provisioner, cpu_list
from src.services.volumes.layers import VolumeLayers
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

UP = ("running", "paused", HALTED, "blocked", "shutting_down")
JOB_END_S = 60.0  # an aborted job ends within this
COLD_SHUTDOWN_S = 60.0  # a cold move asks the guest to power off, then pulls the plug
DRAIN_TURN_S = 2.0  # a drain's move waiting its turn looks again this often
DOMAIN = "domain"
FILTER = "nwfilter"  # the VM's security groups' filter, defined on the target first


class MigrationWork:
    def __init__(self, db: Database, config: Config, hosts: HostRegistry,
                 images: ImageService, provisioner: Provisioner, layers: VolumeLayers,
                 qemu_img: QemuImg) -> None:
        self._db = db
        self._config = config
        self._hosts = hosts
        self._images = images
        self._provisioner = provisioner
        self._layers = layers
        self._qemu_img = qemu_img

    def run(self, task: TaskRow) -> None:
        """Raises: TaskFailed, HypervisorUnavailable (a host is away: looked at again later)."""
        move = self._move(task.id)
        if move.phase == "queued":
            self._start(task, move)
        elif move.phase in ("preparing", "transferring"):
            self._after_interruption(task, move)
        elif move.phase == "committed":
            self._clean_source(move)

    def wait_s(self, conn: sqlite3.Connection, task: TaskRow) -> float | None:
        """Seconds a drain's move waits for its turn (IAAS_DRAIN_PARALLEL of its drain run at
        once), or None: it starts now. The caller's transaction marks it running."""
        drain = drain_of(task)
        if drain is None or drain_dao.running_moves(conn, drain) < self._config.drain_parallel:
            return None
        return DRAIN_TURN_S

    def expire(self, task: TaskRow) -> None:
        """A move that never started gives its claim on the target back."""
        with self._db.write() as conn:
            move = move_dao.get(conn, task.id)
            if move is not None and move.phase == "queued":
                move_dao.release_target(conn, move, utc_now(), "task_expired")

    def settle(self, move: MigrationRow) -> None:
        """Finish or roll back a move whose task ended without doing so (it timed out).

        Raises: HypervisorError (a host is away: the next housekeeping pass tries again).
        """
        if move.phase == "committed":
            self._clean_source(move)
            return
        try:
            self._after_interruption(None, move)
        except TaskFailed:
            pass  # rolled back: the VM runs on its source

    def _start(self, task: TaskRow, move: MigrationRow) -> None:
        vm = self._vm(move.vm_id)
        sides = self._sides(move)
        state = sides.source_host.hypervisor.power_state(vm.id)
        was_running = state in UP
        move = replace(move, was_running=was_running, live=move.live and was_running)
        with self._db.write() as conn:
            conn.execute("UPDATE vm_migrations SET was_running = ?, live = ? WHERE task_id = ?",
                         (int(was_running), int(move.live), move.task_id))
        self._phase(move, "preparing")
        try:
            plan = plan_of(self._db, vm.id, self._image_of(vm), sides)
            self._made(move, FILTER, "")
            self._provisioner.firewall.put(vm.id, sides.target_host)  # its NICs name it
            if move.live:
                self._live(task, move, plan, sides)
            else:
                self._cold(task, move, plan, sides)
        except HypervisorUnavailable:
            raise  # a host went away: the next look finds out where the VM is
        except Exception as exc:
            failure = exc if isinstance(exc, TaskFailed) else TaskFailed(
                "migration_failed", f"The VM's files could not be made ready on host "
                                    f"{move.target}: {exc}")
            if not isinstance(exc, (TaskFailed, HypervisorError, CommandFailed, OSError,
                                    ValueError)):
                log.exception("migration of %s crashed", vm.id)
            self._roll_back(self._move(move.task_id), failure.code)
            raise failure from exc
        self._commit(move, plan, sides)
        self._clean_source(self._move(move.task_id))

    def _live(self, task: TaskRow, move: MigrationRow, plan: Plan, sides: Sides) -> None:
        source, target = sides.source_host, sides.target_host
        paths = self._prepared(move, plan, sides, copy_tops=False)
        where = self._where(move, plan, sides, paths)
        migrations = source.hypervisor.migrations
        dest = retarget(migrations.migratable_xml(move.vm_id, live=True), where)
        persist = retarget(migrations.migratable_xml(move.vm_id, live=False), where)
        self._made(move, DOMAIN, "")
        self._phase(move, "transferring")
        copied = () if sides.shared else tuple(device for device in paths
                                               if device != SEED_DEVICE)
        LiveTransfer(self._db, self._config.migration_timeout_s).run(
            task.id, source, move.vm_id, MigrationRequest(
                target_uri=target.row.uri, dest_xml=dest, persist_xml=persist,
                copy_disks=copied,
                data_uri=data_uri(target.row.uri), max_mibps=self._config.migration_max_mbps))
        target.hypervisor.set_autostart(move.vm_id, True)
        report(self._db, task.id, "done", **final_facts(target, move.vm_id))

    def _cold(self, task: TaskRow, move: MigrationRow, plan: Plan, sides: Sides) -> None:
        source, target = sides.source_host.hypervisor, sides.target_host.hypervisor
        if move.was_running:
            report(self._db, task.id, "stopping")
            self._stop(source, move.vm_id)
        source.set_autostart(move.vm_id, False)  # never two copies after a host reboot
        report(self._db, task.id, "copying")
        paths = self._prepared(move, plan, sides, copy_tops=True)
        xml = source.migrations.migratable_xml(move.vm_id, live=False)
        dest = retarget(xml, self._where(move, plan, sides, paths, self._gpus_on_target(move)))
        self._made(move, DOMAIN, "")
        self._phase(move, "transferring")
        target.define(dest)
        if move.was_running:
            report(self._db, task.id, "starting")
            target.start(move.vm_id)
        target.set_autostart(move.vm_id, move.was_running)
        report(self._db, task.id, "done")

    def _prepared(self, move: MigrationRow, plan: Plan, sides: Sides,
                  copy_tops: bool) -> dict[str, str]:
        """Each disk's file on the target, by device (the ones it has now when shared)."""
        if sides.shared:
            return {disk.target_dev: disk.source or "" for disk in
                    sides.source_host.hypervisor.disk_targets(move.vm_id, live=move.live)}
        carrier = Carrier(self._qemu_img, self._config.instances_dir,
                          lambda kind, name: self._made(move, kind, name))
        return carrier.prepare(plan, sides, copy_tops)

    def _where(self, move: MigrationRow, plan: Plan, sides: Sides, paths: dict[str, str],
               hostdevs: tuple[tuple[int, int, int, int], ...] | None = None) -> Retarget:
        console = sides.target_disks.files(move.vm_id).where(plan.console)
        return Retarget(disks=paths, console_log=console,
                        network=sides.target_host.row.network, numa_node=move.numa_node,
                        networks=nics.renames(sides.source_host, sides.target_host, nics.named(
                            self._db, move.vm_id, sides.source_host)),
                        cpuset=cpu_list(move.node_cpus) if move.numa_node is not None else "",
                        pinned_cpus=tuple(move.pinned_cpus), hostdevs=hostdevs)

    def _gpus_on_target(self, move: MigrationRow) -> tuple[tuple[int, int, int, int], ...]:
        with self._db.read() as conn:
            gpus = [gpu for gpu in gpu_dao.for_vm(conn, move.vm_id) if gpu.host == move.target]
        return tuple(split_address(function) for gpu in gpus for function in gpu.functions)

    @staticmethod
    def _stop(hypervisor: Hypervisor, vm_id: str) -> None:
        """Ask the guest to power off; pull the plug after COLD_SHUTDOWN_S."""
        deadline = time.monotonic() + COLD_SHUTDOWN_S
        pause = threading.Event()
        try:
            hypervisor.shutdown(vm_id)
        except HypervisorError:
            pass  # paused, or already on its way down: the plug is pulled below
        while hypervisor.power_state(vm_id) in UP and time.monotonic() < deadline:
            pause.wait(0.5)
        hypervisor.force_off(vm_id)

    def _after_interruption(self, task: TaskRow | None, move: MigrationRow) -> None:
        """Finish the move when the VM runs on the target; else roll it back and fail."""
        sides = self._sides(move)
        if self._runs_on_target(move, sides):
            vm = self._vm(move.vm_id)
            log.warning("migration %s was cut short after the VM reached %s: finishing it",
                        move.task_id, move.target)
            self._commit(move, plan_of(self._db, vm.id, self._image_of(vm), sides), sides)
            self._clean_source(self._move(move.task_id))
            return
        log.warning("migration %s was cut short before the VM left %s: rolling it back",
                    move.task_id, move.source)
        self._roll_back(move, "migration_interrupted")
        raise TaskFailed("migration_interrupted", (
            f"The migration was cut short (its process stopped) and rolled back; the VM runs "
            f"on host {move.source} as before."))

    def _runs_on_target(self, move: MigrationRow, sides: Sides) -> bool:
        source, target = sides.source_host.hypervisor, sides.target_host.hypervisor
        if source.migrations.abort_job(move.vm_id):  # a copy libvirt still runs: stop it
            deadline = time.monotonic() + JOB_END_S
            while (job := source.migrations.job(move.vm_id)) is not None and job.active:
                if time.monotonic() > deadline:
                    raise HypervisorUnavailable(f"the migration job of {move.vm_id} on "
                                                f"{move.source} does not end")
                threading.Event().wait(0.5)
        there, here = target.power_state(move.vm_id), source.power_state(move.vm_id)
        if move.phase != "transferring" or there not in UP:
            return False
        return here not in UP or (here == "paused" and there == "running")

    def _commit(self, move: MigrationRow, plan: Plan, sides: Sides) -> None:
        vnc_port = self._provisioner.vnc_port(move.vm_id, sides.target_host)
        with self._db.write() as conn:
            move_dao.commit(conn, move, vnc_port, plan.renames, plan.volume_ids, utc_now())
            nics.commit(conn, move.vm_id, sides.source_host, sides.target_host)
        log.info("vm %s moved from %s to %s", move.vm_id, move.source, move.target)

    def _clean_source(self, move: MigrationRow) -> None:
        """Remove the VM's domain from the source, and its files unless the hosts share them.

        Raises: TaskFailed (the VM runs on the target; the source keeps what could not go),
        HypervisorUnavailable.
        """
        sides = self._sides(move)
        source = sides.source_host
        try:
            source.hypervisor.force_off(move.vm_id)
            source.hypervisor.undefine(move.vm_id)
            self._provisioner.firewall.remove(move.vm_id, source)
            if not sides.shared:
                sides.source_disks.remove(move.vm_id)
                files = self._layers.files(source)
                for name in self._volume_files(move.vm_id):
                    files.remove(name)
        except HypervisorUnavailable:
            raise
        except (HypervisorError, TaskFailed, OSError) as exc:
            raise TaskFailed("source_cleanup_failed", (
                f"The VM runs on host {move.target}, but host {move.source} still holds some "
                f"of its files: {exc}")) from exc
        self._phase(move, "done")

    def _roll_back(self, move: MigrationRow, code: str) -> None:
        """Remove from the target what the move made there, give its claim back, and start the
        VM again on its source when a cold move had stopped it.

        Raises: HypervisorUnavailable (the next look rolls back again).
        """
        sides = self._sides(move)
        target = sides.target_host.hypervisor
        for kind, name in reversed(move.made):
            try:
                if kind == DOMAIN:
                    target.force_off(move.vm_id)
                    target.undefine(move.vm_id)
                elif kind == FILTER:
                    self._provisioner.firewall.remove(move.vm_id, sides.target_host)
                elif kind == ROOT and not name:
                    sides.target_disks.remove(move.vm_id)
                elif kind == ROOT:
                    sides.target_disks.files(move.vm_id).remove(name)
                elif kind == VOLUME:
                    self._layers.files(sides.target_host).remove(name)
            except HypervisorUnavailable:
                raise
            except (HypervisorError, TaskFailed, OSError) as exc:
                log.error("rollback of migration %s could not remove %s %s: %s",
                          move.task_id, kind, name, exc)
        source = sides.source_host.hypervisor
        if move.was_running and source.power_state(move.vm_id) not in UP:
            source.start(move.vm_id)
            source.set_autostart(move.vm_id, True)
        with self._db.write() as conn:
            move_dao.release_target(conn, move, utc_now(), code)

    def _volume_files(self, vm_id: str) -> list[str]:
        """Every layer of the VM's volumes (their names are the same on every host)."""
        with self._db.read() as conn:
            attached = volume_dao.attachments_for_vms(conn, [vm_id]).get(vm_id, [])
            names: list[str] = []
            for attachment in attached:
                names += [layer.name for layer in
                          snapshot_dao.layers_of(conn, attachment.volume_id)]
                volume = volume_dao.get(conn, attachment.volume_id)
                if volume is not None and volume.top_layer and volume.top_layer not in names:
                    names.append(volume.top_layer)
        return list(reversed(names))  # children before the parents they are backed by

    def _sides(self, move: MigrationRow) -> Sides:
        source, target = self._hosts.get(move.source), self._hosts.get(move.target)
        return Sides(move.vm_id, (source, self._provisioner.disks(source)),
                     (target, self._provisioner.disks(target)), self._layers)

    def _image_of(self, vm: vm_dao.VmRow) -> ImageRef:
        with self._db.read() as conn:
            image = image_dao.by_id(conn, vm.image_id)
        if image is None:
            raise TaskFailed("image_gone", f"The VM's image {vm.image_name} is gone.")
        return ImageRef(id=image.id, name=image.name, path=str(self._images.path_of(image.file)),
                        format=image.format, sha256=image.sha256)

    def _vm(self, vm_id: str) -> vm_dao.VmRow:
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
        if row is None:
            raise TaskFailed("vm_gone", "The VM was removed while this task waited.")
        return row

    def _move(self, task_id: str) -> MigrationRow:
        with self._db.read() as conn:
            move = move_dao.get(conn, task_id)
        if move is None:
            raise TaskFailed("migration_gone", "The migration's record is gone.")
        return move

    def _phase(self, move: MigrationRow, phase: str) -> None:
        with self._db.write() as conn:
            move_dao.set_phase(conn, move.task_id, phase, utc_now())

    def _made(self, move: MigrationRow, kind: str, name: str) -> None:
        with self._db.write() as conn:
            move_dao.add_made(conn, move.task_id, [kind, name], utc_now())



def drain_of(task: TaskRow) -> str | None:
    """The host whose drain queued the move, or None (a move asked for itself)."""
    drain = json.loads(task.payload or "{}").get("args", {}).get("drain")
    return str(drain) if drain else None
