"""The work of VM tasks, run off the request thread: build, power actions, delete, and the
clean-up of tasks a restart cut short."""
from __future__ import annotations

import logging
from typing import Any

from src.database import security_groups as group_dao
from src.database import snapshots as snapshot_dao
from src.database import tasks as task_dao
from src.database import vm_nics as nic_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.domains import MISSING
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.services.hosts.registry import Host, HostRegistry
from src.services.rules import lifecycle
from src.services.security.firewall import ACTION as FIREWALL_ACTION
from src.services.tasks.runner import Next, TaskFailed
from src.services.vms.build_record import BuildRecord
from src.services.vms.power import PowerControl, PowerOptions
from src.services.vms.provisioning import Provisioner
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

CLEANUP_FAILED = ("Its domain could not be removed, so it keeps its resources; "
                  "delete the VM to finish the clean-up.")
INTERRUPTED = ("interrupted", "The server stopped before this task finished.")
# Tasks a restart runs again instead of ending: their next step finds out where the VM is.
RESUMED_ACTIONS = ("migrate", "evacuate")


class VmWork:
    def __init__(self, db: Database, hosts: HostRegistry, provisioner: Provisioner) -> None:
        self._db = db
        self._hosts = hosts
        self._provisioner = provisioner
        self.firewall = provisioner.firewall  # the `firewall` task's work

    def _host_of(self, vm_id: str) -> Host:
        """The host the VM lives on. Raises: TaskFailed when the VM row is gone."""
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
        if row is None:
            raise TaskFailed("vm_gone", "The VM was removed while this task waited.")
        return self._hosts.get(row.host)

    def build(self, record: BuildRecord) -> None:
        """Make and start the VM; on failure leave it in error, its resources freed only when
        nothing of it is left on the host.

        Raises: TaskFailed, HypervisorUnavailable and HostUnavailable (the host is away).
        """
        vm_id = record.vm_id
        with self._db.read() as conn:  # the record alone would build a VM nobody has any more
            if vm_dao.get(conn, vm_id) is None:
                raise TaskFailed("vm_gone", "The VM was removed before its build ran.")
        host = self._hosts.get(record.host)

        def mark_running(vnc_port: int | None) -> None:
            with self._db.write() as conn:
                now = utc_now()
                vm_dao.set_vnc_port(conn, vm_id, vnc_port, now)
                volume_dao.confirm_pending(conn, vm_id)
                if not vm_dao.set_status(conn, vm_id, "running", now, only_from="building"):
                    # The reconciler failed this build (task_timeout) meanwhile: undo it all.
                    raise TaskFailed("task_timeout", "The build outlived its deadline.")

        try:
            self._provisioner.build(record, host, mark_running)
        except HypervisorUnavailable:
            raise  # the host went away: the task waits for it and starts again from clean
        except Exception as exc:
            failure = exc if isinstance(exc, TaskFailed) else TaskFailed(
                "build_failed", f"The build failed unexpectedly: {exc}")
            gone = self._gone_from_host(vm_id, host)  # the undo steps are best-effort
            with self._db.write() as conn:
                vm_dao.set_status(conn, vm_id, "error", utc_now(), (
                    failure.code, failure.message if gone else
                    f"{failure.message} {CLEANUP_FAILED}"), only_from="building")
                if gone:  # only what is off the host may go to the next VM
                    vm_dao.release_resources(conn, vm_id)
                    volume_dao.drop_pending(conn, vm_id)
            if isinstance(exc, TaskFailed):
                raise
            log.exception("build of %s crashed", vm_id)
            raise failure from exc

    def power(self, vm_id: str, action: str, options: PowerOptions,
              look: dict[str, Any] | None = None) -> Next | None:
        """Do the action, or take the next look at one under way; recorded once done.

        Raises: TaskFailed, HypervisorUnavailable.
        """
        host = self._host_of(vm_id)
        found = PowerControl(host.hypervisor).run(vm_id, action, options, look)
        if found is None:
            self._record_power(vm_id, action, host)
        return found

    def build_ended(self, vm_id: str) -> bool:
        """Whether an earlier attempt at the VM's build got to its end (its worker died before
        the task was recorded as ended): True when it succeeded, False while it still builds.

        Raises: TaskFailed (the attempt failed, with its code; or the VM is gone).
        """
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
        if row is None:
            raise TaskFailed("vm_gone", "The VM was removed before its build ran.")
        if row.status == "error":
            raise TaskFailed(row.error_code or "build_failed", row.error_message or "")
        return row.status != "building"

    def clean_leftovers(self, vm_id: str) -> None:
        """Remove what an earlier, cut-short build left on the host (domain, disks).

        Raises: TaskFailed, HypervisorUnavailable.
        """
        self._provisioner.tear_down(vm_id, self._host_of(vm_id))

    def _record_power(self, vm_id: str, action: str, host: Host) -> None:
        status = lifecycle.RESULT[action]
        running = status != "stopped"
        vnc_port = self._provisioner.vnc_port(vm_id, host) if running else None
        with self._db.write() as conn:
            now = utc_now()
            vm_dao.set_status(conn, vm_id, status, now)
            vm_dao.set_vnc_port(conn, vm_id, vnc_port, now)
            if not running:
                vm_dao.set_addresses(conn, vm_id, [], now)
                nic_dao.clear_addresses(conn, vm_id)

    def expire_build(self, vm_id: str) -> None:
        """A create that never started: nothing is on the host, so its claim goes back."""
        self.fail_unbuilt(vm_id, TaskFailed(
            "task_expired", "The build waited in the queue too long and never started."))

    def fail_unbuilt(self, vm_id: str, failure: TaskFailed) -> None:
        """A build that cannot start (it expired, or its record is unreadable): nothing of it
        is on the host, so the VM is in error and its claim goes back."""
        with self._db.write() as conn:
            vm_dao.set_status(conn, vm_id, "error", utc_now(), (failure.code, failure.message),
                              only_from="building")
            vm_dao.release_resources(conn, vm_id)
            volume_dao.drop_pending(conn, vm_id)

    def delete(self, vm_id: str) -> None:
        """Remove the VM from the host, then its row. Raises: TaskFailed (the VM is then error)."""
        host = self._host_of(vm_id)
        with self._db.write() as conn:  # only now: a delete still queued leaves the VM as it is
            vm_dao.set_status(conn, vm_id, "deleting", utc_now())
        try:
            self._provisioner.tear_down(vm_id, host)
        except TaskFailed as exc:
            with self._db.write() as conn:
                vm_dao.set_status(conn, vm_id, "error", utc_now(), (exc.code, exc.message))
            raise
        with self._db.write() as conn:  # its snapshots lived in its files, now gone
            snapshot_dao.delete_of(conn, vm_id)
            snapshot_dao.remove_layers_of(conn, vm_id)
            vm_dao.delete(conn, vm_id)

    def recover_interrupted(self) -> int:
        """End the tasks a restart cut short; return how many.

        A half-made VM is torn down and kept in error (interrupted) for the user to see; a
        half-done delete is finished; a power action just fails, and the reconciler's first
        sweep sets the status from the host; a firewall refresh is left to the housekeeping
        pass (its VM is marked pending). A migration is left running: it is resumed
        (RESUMED_ACTIONS).
        """
        with self._db.read() as conn:  # only what this executor runs: broker tasks live on
            interrupted = [task for task in task_dao.list_active(conn)
                           if task.executor == "inprocess"
                           and task.action not in RESUMED_ACTIONS]
        for task in interrupted:
            error: tuple[str, str] | None = INTERRUPTED
            if task.vm_id is None:
                pass  # an image's import: ImageService.recover fails the image
            elif task.action == "create":
                cleaned = self._tear_down_quietly(task.vm_id)
                with self._db.write() as conn:
                    vm_dao.set_status(conn, task.vm_id, "error", utc_now(), INTERRUPTED if cleaned
                                      else ("cleanup_failed", CLEANUP_FAILED))
                    if cleaned:  # a domain that may still run keeps its GPUs and CPUs
                        vm_dao.release_resources(conn, task.vm_id)
                        volume_dao.drop_pending(conn, task.vm_id)
            elif task.action == FIREWALL_ACTION:  # the housekeeping pass refreshes it
                with self._db.write() as conn:
                    if vm_dao.get(conn, task.vm_id) is not None:
                        group_dao.mark_pending(conn, task.vm_id)
            elif task.action == "delete":
                try:
                    self.delete(task.vm_id)
                    error = None
                except TaskFailed as exc:
                    error = (exc.code, exc.message)
            with self._db.write() as conn:
                task_dao.finish(conn, task.id, utc_now(), error)
        return len(interrupted)

    def _tear_down_quietly(self, vm_id: str) -> bool:
        """Whether nothing of the VM is left on the host."""
        try:
            self._provisioner.tear_down(vm_id, self._host_of(vm_id))
        except TaskFailed as exc:
            log.error("cleanup of interrupted build %s failed: %s", vm_id, exc)
            return False
        return True

    @staticmethod
    def _gone_from_host(vm_id: str, host: Host) -> bool:
        """Whether the VM has no domain; an unreachable host counts as 'maybe still there'."""
        try:
            return host.hypervisor.power_state(vm_id) == MISSING
        except HypervisorError:
            return False
