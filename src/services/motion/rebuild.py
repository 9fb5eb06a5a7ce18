"""The host side of an evacuate task: rebuild the VM of a down host on its target (over its own
files when they are reachable, else over a fresh root disk and seed from its base image), then
commit the rows in one transaction; or roll back so that the target keeps nothing and the VM
stays recorded on its dead host as before.

Every thing made on the target is recorded in the evacuation's row before it is made, so an
attempt that starts again after its process died rolls the earlier one back and fails: never
two builds of one VM, and the operator evacuates again.
"""
from __future__ import annotations

import json
import logging

from src.database import flavors as flavor_dao
from src.database import gpus as gpu_dao
from src.database import images as image_dao
from src.database import snapshots as snapshot_dao
from src.database import tasks as task_dao
from src.database import vm_evacuations as evac_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.database.tasks import TaskRow
from src.database.vm_evacuations import EvacuationRow
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.services.hosts.registry import Host, HostRegistry
from src.services.images.catalog import ImageService
from src.services.tasks.runner import TaskFailed
from src.services.vms import build_record
from src.services.vms.build_record import (
    BuildOptions,
    BuildRecord,
    CloudInit,
    GpuClaim,
    ImageRef,
    Placement,
    VolumeDisk,
)
from src.services.vms.disks import CONSOLE_LOG, SEED_FILE, Placed
from src.services.vms.provisioning import Provisioner
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

ROOT, DOMAIN = "root", "domain"


class EvacuationWork:
    def __init__(self, db: Database, hosts: HostRegistry, images: ImageService,
                 provisioner: Provisioner) -> None:
        self._db = db
        self._hosts = hosts
        self._images = images
        self._provisioner = provisioner

    def run(self, task: TaskRow) -> None:
        """Raises: TaskFailed, HypervisorUnavailable (the target is away: looked at again)."""
        row = self._row(task.id)
        if row.phase == "queued":
            self._start(row)
        elif row.phase == "building":  # an attempt was cut short: undo it, never build twice
            log.warning("evacuation %s of vm %s was cut short: rolling it back", row.task_id,
                        row.vm_id)
            self._roll_back(row, "evacuation_interrupted")
            raise TaskFailed("evacuation_interrupted", (
                f"The evacuation was cut short (its process stopped) and rolled back; the VM "
                f"is still recorded on host {row.source}. Evacuate the host again."))

    def expire(self, task: TaskRow) -> None:
        """An evacuation that never started gives its claim on the target back."""
        with self._db.write() as conn:
            row = evac_dao.get(conn, task.id)
            if row is not None and row.phase == "queued":
                evac_dao.release_target(conn, row, utc_now(), "task_expired")

    def settle_orphans(self) -> int:
        """Roll back every rebuild whose task ended without finishing it (it timed out, or
        its host did not come back in time); how many were settled."""
        with self._db.read() as conn:
            orphans = [row for row in evac_dao.list_claiming(conn)
                       if (task := task_dao.get(conn, row.task_id)) is None
                       or task.status not in ("queued", "running")]
        settled = 0
        for row in orphans:
            try:
                self._roll_back(row, row.error_code or "evacuation_unfinished")
                settled += 1
            except HypervisorError as exc:
                log.warning("evacuation %s of vm %s stays unsettled for now: %s", row.task_id,
                            row.vm_id, exc)
        return settled

    def _start(self, row: EvacuationRow) -> None:
        with self._db.write() as conn:
            evac_dao.set_phase(conn, row.task_id, "building", utc_now())
        target = self._hosts.get(row.target)
        try:
            record, keep = self._record(row, target)
            port = self._provisioner.rebuild(record, target, row.start, keep,
                                             lambda kind: self._made(row, kind))
        except HypervisorUnavailable:
            raise  # the target went away: the next look rolls back
        except Exception as exc:
            failure = exc if isinstance(exc, TaskFailed) else TaskFailed(
                "evacuation_failed", f"The VM could not be rebuilt on host {row.target}: {exc}")
            if not isinstance(exc, (TaskFailed, HypervisorError, OSError, ValueError)):
                log.exception("evacuation of %s crashed", row.vm_id)
            self._roll_back(self._row(row.task_id), failure.code)
            raise failure from exc
        with self._db.write() as conn:
            evac_dao.commit(conn, row, "running" if row.start else "stopped", port, utc_now())
        log.warning("vm %s rebuilt on %s, off down host %s", row.vm_id, row.target, row.source)

    def _record(self, row: EvacuationRow, target: Host) -> tuple[BuildRecord, Placed | None]:
        """The VM's build record on the target, and its own files when it keeps them.

        Raises: TaskFailed (vm_gone, image_gone), FileNotFoundError.
        """
        with self._db.read() as conn:
            vm = vm_dao.get(conn, row.vm_id)
            if vm is None:
                raise TaskFailed("vm_gone", "The VM was removed while this task waited.")
            image = image_dao.by_id(conn, vm.image_id)
            flavor = flavor_dao.get(conn, vm.flavor_name) if vm.flavor_name else None
            gpus = [gpu for gpu in gpu_dao.for_vm(conn, vm.id) if gpu.host == row.target]
            lost = {volume["volume_id"] for volume in row.lost_volumes}
            attached = [a for a in volume_dao.attachments_for_vms(conn, [vm.id]).get(vm.id, [])
                        if a.volume_id not in lost]
            volumes = {a.volume_id: volume_dao.get(conn, a.volume_id) for a in attached}
            top = snapshot_dao.root_top(conn, vm.id)
        if image is None:
            raise TaskFailed("image_gone", f"The VM's image {vm.image_name} is gone.")
        record = BuildRecord(
            vm_id=vm.id, name=vm.name, project=vm.project, domain_name=vm.domain_name,
            host=target.name, cpu=vm.cpu, ram_mib=vm.ram, disk_gb=vm.disk_gb, mac=vm.mac or "",
            network=target.row.network,
            image=ImageRef(id=image.id, name=image.name,
                           path=str(self._images.path_of(image.file)), format=image.format,
                           sha256=image.sha256),
            placement=Placement(gpus=tuple(GpuClaim(gpu.id, tuple(gpu.functions))
                                           for gpu in gpus),
                                numa_node=row.numa_node, node_cpus=tuple(row.node_cpus),
                                pinned_cpus=tuple(row.pinned_cpus)),
            cloud_init=self._cloud_init(vm.id),
            options=BuildOptions(hugepages=bool(flavor and flavor.hugepages)),
            volumes=tuple(VolumeDisk(a.volume_id, a.device, a.read_only, bool(
                (volume := volumes[a.volume_id]) and volume.multiattach)) for a in attached))
        if not row.keeps_disks:
            return record, None
        disks = self._provisioner.shared  # kept files are this machine's (shared storage)
        folder = disks.folder(vm.id)
        disk = disks.layer_path(vm.id, top or disks.root_layer(vm.id))
        return record, Placed(disk, str(folder / SEED_FILE), str(folder / CONSOLE_LOG))

    def _cloud_init(self, vm_id: str) -> CloudInit:
        """What the VM's create put in its seed (its SSH keys, those of its keypairs
        included, and its user-data), read from the create task's build record."""
        with self._db.read() as conn:
            created = conn.execute("SELECT payload FROM tasks WHERE vm_id = ? AND action = "
                                   "'create' ORDER BY created_at LIMIT 1", (vm_id,)).fetchone()
        payload = json.loads(created[0] or "{}") if created else {}
        for key in (build_record.KEY, build_record.WAITING_KEY):
            if isinstance(payload.get(key), dict):
                data = {build_record.KEY: payload[key]}
                return build_record.from_payload(data, vm_id, _no_legacy).cloud_init
        args = payload.get("args", {})
        return CloudInit(tuple(args.get("ssh_keys", ())), args.get("user_data"))

    def _roll_back(self, row: EvacuationRow, code: str) -> None:
        """Remove from the target what the rebuild made there and give its claim back.

        Raises: HypervisorUnavailable (the next look rolls back again).
        """
        target = self._hosts.get(row.target)
        for kind in reversed([kind for kind, _ in row.made]):
            try:
                if kind == DOMAIN:
                    target.hypervisor.force_off(row.vm_id)
                    target.hypervisor.undefine(row.vm_id)
                elif kind == ROOT:  # a fresh root disk: never the VM's own kept files
                    self._provisioner.disks(target).remove(row.vm_id)
            except HypervisorUnavailable:
                raise
            except (HypervisorError, TaskFailed, OSError) as exc:
                log.error("rollback of evacuation %s could not remove %s: %s", row.task_id,
                          kind, exc)
        with self._db.write() as conn:
            evac_dao.release_target(conn, row, utc_now(), code)

    def _row(self, task_id: str) -> EvacuationRow:
        with self._db.read() as conn:
            row = evac_dao.get(conn, task_id)
        if row is None:
            raise TaskFailed("evacuation_gone", "The evacuation's record is gone.")
        return row

    def _made(self, row: EvacuationRow, kind: str) -> None:
        with self._db.write() as conn:
            evac_dao.add_made(conn, row.task_id, [kind, ""], utc_now())


def _no_legacy(_args: object) -> BuildRecord:
    raise KeyError("version")
