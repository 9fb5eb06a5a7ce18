"""How a task runs, whichever executor runs it (the API's own worker threads or a Celery
worker): start it, run its next step from what its row holds, wait out a host that does not
answer, and record its end. Every step may run again safely: a create that starts again after
its worker died first removes what the earlier attempt left on the host.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from src import errors
from src.database import gpus as gpu_dao
from src.database import security_groups as group_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorUnavailable
from src.services.hosts.registry import HostRegistry
from src.services.images.catalog import ImageService
from src.services.images.imports import ImageDownloads
from src.services.motion.rebuild import EvacuationWork
from src.services.motion.work import MigrationWork, drain_of
from src.services.security import firewall
from src.services.tasks.runner import EXPIRED, Next, TaskFailed
from src.services.vms import build_record
from src.services.vms.build_record import BuildRecord, UnreadableRecord
from src.services.vms.power import PowerOptions
from src.services.vms.root_disks import RootDiskWork
from src.services.vms.work import VmWork
from src.services.volumes.work import VolumeWork
from src.utils.clock import utc_after, utc_now
from src.vocabulary import VM_DISK_ACTIONS

log = logging.getLogger(__name__)

HOST_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0)  # waiting out a host that does not answer
# A Celery task whose project runs its IAAS_PROJECT_MAX_TASKS already looks again then (the
# embedded runner keeps the same share with its fair queue, src/services/tasks/fair_queue.py).
WAIT_FOR_SHARE_S = 1.0
SHUTDOWN_MARGIN_S = 60.0
ROOT_DISK_ACTIONS = (*VM_DISK_ACTIONS, "snapshot_delete")  # snapshot_delete of a VM's disk
Publish = Callable[[int, float], None]  # (the next step's number, seconds until it is due)


class TaskSteps:
    """What each action does, from the task's row and its payload: a create's build record,
    any other action's `args`."""

    def __init__(self, db: Database, hosts: HostRegistry, images: ImageService, work: VmWork,
                 downloads: ImageDownloads, timeouts: tuple[float, float],
                 volumes: VolumeWork, root_disks: RootDiskWork, moves: MigrationWork,
                 migration_timeout_s: float, project_max_tasks: int = 8, *,
                 evacuations: EvacuationWork) -> None:
        """timeouts: (any task's, an image import's) seconds; project_max_tasks: how many
        tasks of one project Celery workers run at once (IAAS_PROJECT_MAX_TASKS)."""
        self._project_max_tasks = project_max_tasks
        self._db = db
        self._moves = moves
        self._evacuations = evacuations
        self._migration_timeout_s = migration_timeout_s
        self._volumes = volumes
        self._root_disks = root_disks
        self._hosts = hosts
        self._images = images
        self._work = work
        self._downloads = downloads
        self._task_timeout_s, self._import_timeout_s = timeouts

    def timeout_s(self, task: task_dao.TaskRow, args: dict[str, Any]) -> float:
        """How long the task may run once started (a shutdown: at least its own timeout)."""
        if task.action == "shutdown":
            return max(self._task_timeout_s, float(args.get("timeout", 60)) + SHUTDOWN_MARGIN_S)
        if task.action == "import":
            return self._import_timeout_s
        if task.action == "migrate":  # its files are carried first, then its copy may run
            return self._task_timeout_s + self._migration_timeout_s
        return self._task_timeout_s

    def run(self, task: task_dao.TaskRow, payload: dict[str, Any],
            state: dict[str, Any]) -> Next | None:
        """Raises: TaskFailed, HypervisorUnavailable and HostUnavailable (the host is away)."""
        args = payload.get("args", {})
        if task.action == "import":
            self._downloads.run_task(task.image_id, bool(state.get("again")))
            return None
        if task.action == firewall.ACTION:  # security groups reach running VMs
            self._work.firewall.refresh([task.vm_id or ""], self._hosts)
            return None
        if task.volume_id is not None:  # a volume's task, or an attachment's
            self._volumes.run(task.action, task.volume_id, task.vm_id, args)
            return None
        if task.action in ROOT_DISK_ACTIONS:
            self._root_disks.run(task.action, task.vm_id or "", task.image_id, args)
            return None
        if task.action == "migrate":
            self._moves.run(task)
            return None
        if task.action == "evacuate":
            self._evacuations.run(task)
            return None
        vm_id = task.vm_id or ""  # every other task has its VM
        if task.action == "create":
            if state.get("again"):  # an earlier attempt was cut short...
                if self._work.build_ended(vm_id):
                    return None  # ...after it had made the VM: that outcome stands
                self._work.clean_leftovers(vm_id)  # ...before: start from a clean host
            self._work.build(self._record(vm_id, payload))
            return None
        if task.action == "delete":
            self._work.delete(vm_id)
            return None
        return self._work.power(vm_id, task.action, PowerOptions(**args), state.get("look"))

    def wait_s(self, conn: sqlite3.Connection, task: task_dao.TaskRow) -> float | None:
        """Seconds a queued task must wait before it starts, or None: it starts now. A migrate
        of a drain waits its turn; an import waits while its project downloads its share
        already; with Celery, any task waits while its project runs IAAS_PROJECT_MAX_TASKS
        (counted in the transaction that would start it, so two workers cannot both take the
        last place). A Celery queue is FIFO: the step is handed on for later and its worker
        takes the next message, so one project's burst holds at most its share of a host's
        workers and the others' tasks pass it."""
        if task.action == "migrate" and (wait := self._moves.wait_s(conn, task)) is not None:
            return wait
        if task.action == "import" and (wait := self._downloads.wait_s(conn, task)) is not None:
            return wait
        if (task.executor == "celery"
                and task_dao.count_running_of(conn, task.project) >= self._project_max_tasks):
            return WAIT_FOR_SHARE_S
        return None

    def waits_its_turn(self, task: task_dao.TaskRow) -> bool:
        """A queued task that waits for others of its kind, not for a worker (a drain's move):
        IAAS_TASK_QUEUE_TIMEOUT does not end it."""
        return task.action == "migrate" and drain_of(task) is not None

    def expire(self, task: task_dao.TaskRow) -> None:
        """A task that never started: a create gives its claim back, an import's image fails."""
        args = json.loads(task.payload or "{}").get("args", {})
        if task.volume_id is not None:
            self._volumes.expire(task.action, task.volume_id, task.vm_id, args,
                                 ("task_expired", EXPIRED))
        elif task.action in ROOT_DISK_ACTIONS:
            self._root_disks.expire(task.action, task.vm_id or "", task.image_id, args,
                                    ("task_expired", EXPIRED))
        elif task.action == "create":
            self._work.expire_build(task.vm_id or "")
        elif task.action == "migrate":
            self._moves.expire(task)
        elif task.action == "evacuate":
            self._evacuations.expire(task)
        elif task.action == "import":
            self._downloads.expire(task.image_id)
        elif task.action == firewall.ACTION and task.vm_id:  # the next pass rewrites it
            with self._db.write() as conn:
                group_dao.mark_pending(conn, task.vm_id)

    def record_of(self, vm_id: str, payload: dict[str, Any]) -> BuildRecord:
        """The build record in vm_id's create task payload, whichever version wrote it (0: no
        record, rebuilt from the VM's rows).

        Raises: UnreadableRecord, TaskFailed (vm_gone).
        """
        return build_record.from_payload(payload, vm_id, lambda args: self._rows(vm_id, args))

    def _record(self, vm_id: str, payload: dict[str, Any]) -> BuildRecord:
        """The record to build from; one that cannot be read fails the VM, whose build never
        started (a redelivery has cleaned the host by now).

        Raises: TaskFailed (vm_gone, build_record_unsupported, build_record_invalid).
        """
        try:
            return self.record_of(vm_id, payload)
        except UnreadableRecord as exc:
            log.error("build of %s cannot start: %s", vm_id, exc.message)
            self._work.fail_unbuilt(vm_id, exc)
            raise

    def _rows(self, vm_id: str, args: dict[str, Any]) -> BuildRecord:
        """Version 0: the record rebuilt from the VM's rows and the payload's args, for a task
        an API from before build records queued. Raises: TaskFailed (vm_gone)."""
        with self._db.read() as conn:
            row = vm_dao.get(conn, vm_id)
            gpus = gpu_dao.for_vm(conn, vm_id)
        if row is None:
            raise TaskFailed("vm_gone", "The VM was removed before its build ran.")
        image = self._images.get(row.image_id)
        return build_record.legacy_record(row, gpus, image, self._images.path_of(image.file),
                                          self._hosts.get(row.host).row.network, args)


class TaskExecution:
    """One step of one task at a time; both executors call step(task_id)."""

    def __init__(self, db: Database, steps: TaskSteps, queue_timeout_s: float = 600.0,
                 on_end: Callable[[task_dao.TaskRow], None] = lambda _task: None) -> None:
        self._db = db
        self._steps = steps
        self._queue_timeout_s = queue_timeout_s
        self._on_end = on_end

    def step(self, task_id: str, seq: int | None = None,
             publish: Publish | None = None) -> float | None:
        """Run the task's next step; seconds until it wants another, or None once it has ended
        (or when it is not there, or already ended: a duplicate message changes nothing).

        With a broker, seq is the step the message is for: a message for another step than the
        one the task is at is stale (its worker died after handing on the next one) and does
        nothing; publish(next_seq, after_s) hands on the next step before it is recorded, so a
        worker dying in between leaves exactly one step to run.
        """
        with self._db.read() as conn:
            task = task_dao.get(conn, task_id)
        if task is None or task.status not in ("queued", "running"):
            return None
        payload = json.loads(task.payload or "{}")
        args, state = payload.get("args", {}), payload.get("step")
        if seq is not None and seq != int((state or {}).get("seq", 0)):
            return None
        if (task.status == "queued" and task.created_at < utc_after(-self._queue_timeout_s)
                and not self._steps.waits_its_turn(task)):
            self._end(task, ("task_expired", EXPIRED))  # it waited in a queue too long
            self._steps.expire(task)
            return None
        if task.status == "queued":
            with self._db.write() as conn:
                wait_s = self._steps.wait_s(conn, task)
                if wait_s is None and not task_dao.mark_running(
                        conn, task.id, utc_now(), utc_after(self._steps.timeout_s(task, args))):
                    return None  # ended while it waited
            if wait_s is not None:  # handed on for later: no worker is held meanwhile
                return self._continue(task, payload, state or {}, {}, wait_s, publish)
        elif state is None:  # running with nothing to continue: its worker died mid-step
            with self._db.write() as conn:
                task_dao.count_attempt(conn, task.id)
            log.warning("task %s (%s) starts again: its worker stopped mid-step", task.id,
                        task.action)
            state = {"again": True}
        return self._attempt(task, payload, state or {}, publish)

    def expire_stale(self, executor: str = "celery") -> int:
        """End the executor's tasks still queued after the queue timeout (a message that never
        reached a worker: no worker for its queue, or lost); how many. The housekeeping pass
        calls it, so nothing stays queued, and its VM busy, for ever."""
        with self._db.read() as conn:
            stale = task_dao.stale_queued(conn, executor, utc_after(-self._queue_timeout_s))
        for task in stale:
            with self._db.write() as conn:
                expired = task_dao.finish(conn, task.id, utc_now(), ("task_expired", EXPIRED))
            if expired:
                log.warning("task %s (%s) expired: no worker took it from its queue", task.id,
                            task.action)
                self._steps.expire(task)
        return len(stale)

    def _attempt(self, task: task_dao.TaskRow, payload: dict[str, Any],
                 state: dict[str, Any], publish: Publish | None) -> float | None:
        try:
            found = self._steps.run(task, payload, state)
        except (HypervisorUnavailable, errors.HostUnavailable) as exc:
            return self._wait_for_host(task, payload, state, exc, publish)
        except TaskFailed as exc:
            self._end(task, (exc.code, exc.message))
            return None
        except Exception:  # the task must end failed, never stay running
            log.exception("task %s (%s) crashed", task.id, task.action)
            self._end(task, ("internal_error", "The task failed unexpectedly; see the server log."))
            return None
        if found is None:
            self._end(task, None)
            return None
        return self._continue(task, payload, state, {"look": found.state}, found.after_s,
                              publish)

    def _continue(self, task: task_dao.TaskRow, payload: dict[str, Any], state: dict[str, Any],
                  new_state: dict[str, Any], after_s: float, publish: Publish | None) -> float:
        """Record the task's next step (numbered), handing it on first when there is a broker."""
        seq = int(state.get("seq", 0)) + 1
        if publish is not None:
            publish(seq, after_s)
        self._save(task, {**payload, "step": {**new_state, "seq": seq}})
        return after_s

    def _wait_for_host(self, task: task_dao.TaskRow, payload: dict[str, Any],
                       state: dict[str, Any], exc: Exception,
                       publish: Publish | None) -> float | None:
        """The host does not answer: try again later, until the task's deadline."""
        with self._db.read() as conn:
            current = task_dao.get(conn, task.id)
        if current is None or (current.deadline and current.deadline <= utc_now()):
            self._end(task, ("host_unavailable", f"The host did not come back: {exc}"))
            return None
        waits = int(state.get("host_waits", 0))
        log.warning("task %s (%s) waits for its host: %s", task.id, task.action, exc)
        return self._continue(task, payload, state, {
            **state, "again": task.action == "create", "host_waits": waits + 1},
            HOST_RETRY_S[min(waits, len(HOST_RETRY_S) - 1)], publish)

    def _save(self, task: task_dao.TaskRow, payload: dict[str, Any]) -> None:
        with self._db.write() as conn:
            task_dao.set_payload(conn, task.id, json.dumps(payload))

    def _end(self, task: task_dao.TaskRow, error: tuple[str, str] | None) -> None:
        with self._db.write() as conn:
            if not task_dao.finish(conn, task.id, utc_now(), error):
                log.warning("task %s ended after it had been failed (timed out)", task.id)
            ended = task_dao.get(conn, task.id)
        log.info("task %s %s for vm %s: %s", task.id, task.action, task.vm_id,
                 "succeeded" if error is None else f"failed ({error[0]})")
        if ended is not None:
            self._on_end(ended)
