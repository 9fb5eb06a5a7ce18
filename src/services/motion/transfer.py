"""One live migration's copy, watched: its progress goes onto the task every PROGRESS_S, and
when it outlives IAAS_MIGRATION_TIMEOUT it is aborted (the VM then runs on as before)."""
from __future__ import annotations

import json
import logging
import threading
import time

from src.database import tasks as task_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.hypervisor.migration import JobProgress, MigrationRequest
from src.services.hosts.registry import Host
from src.services.tasks.runner import TaskFailed

log = logging.getLogger(__name__)

PROGRESS_S = 1.0


def report(db: Database, task_id: str, phase: str, **facts: object) -> None:
    """Put what the task is doing onto it (GET /v1/tasks/{id} shows it as `progress`)."""
    with db.write() as conn:
        task_dao.set_progress(conn, task_id, json.dumps({"phase": phase, **facts}))


def progress_facts(job: JobProgress) -> dict[str, object]:
    return {"bytes_total": job.data_total, "bytes_remaining": job.data_remaining,
            "bytes_processed": job.data_processed,
            "bytes_per_second": job.memory_bps + job.disk_bps,
            "elapsed_s": round(job.elapsed_ms / 1000, 1)}


class LiveTransfer:
    def __init__(self, db: Database, timeout_s: float) -> None:
        self._db = db
        self._timeout_s = timeout_s

    def run(self, task_id: str, source: Host, vm_id: str, request: MigrationRequest) -> None:
        """Migrate the VM off source (blocking), reporting progress on the task.

        Raises: TaskFailed (migration_timeout, migration_failed: the VM still runs on the
        source), HypervisorUnavailable (a host went away: the task looks again later).
        """
        done = threading.Event()
        timed_out = threading.Event()
        watcher = threading.Thread(target=self._watch, name=f"migrate-{vm_id[:8]}",
                                   args=(task_id, source, vm_id, done, timed_out), daemon=True)
        watcher.start()
        try:
            source.hypervisor.migrations.migrate(vm_id, request)
        except HypervisorUnavailable:
            raise
        except HypervisorError as exc:
            if timed_out.is_set():
                raise TaskFailed("migration_timeout", (
                    f"The migration did not finish within {self._timeout_s:g} s "
                    f"(IAAS_MIGRATION_TIMEOUT) and was aborted; the VM runs on host "
                    f"{source.name} as before.")) from exc
            raise TaskFailed("migration_failed", f"libvirt refused or stopped the migration: "
                                                 f"{exc}") from exc
        finally:
            done.set()
            watcher.join(timeout=10)

    def _watch(self, task_id: str, source: Host, vm_id: str, done: threading.Event,
               timed_out: threading.Event) -> None:
        started = time.monotonic()
        while not done.wait(PROGRESS_S):
            try:
                if time.monotonic() - started > self._timeout_s:
                    timed_out.set()
                    log.warning("migration of %s outlived %s s: aborting it", vm_id,
                                self._timeout_s)
                    source.hypervisor.migrations.abort_job(vm_id)
                    return
                job = source.hypervisor.migrations.job(vm_id)
                if job is not None and job.active:
                    report(self._db, task_id, "transferring", **progress_facts(job))
            except HypervisorError as exc:  # the copy's own call will say what went wrong
                log.warning("could not watch the migration of %s: %s", vm_id, exc)


def final_facts(target: Host, vm_id: str) -> dict[str, object]:
    """What the target knows of the migration that brought the VM: libvirt's statistics of
    the completed job (VIR_DOMAIN_JOB_STATS_COMPLETED), named as the progress before it, with
    the guest's downtime; {} when it keeps none."""
    try:
        job = target.hypervisor.migrations.job(vm_id, completed=True)
    except HypervisorError:
        return {}
    if job is None:
        return {}
    facts: dict[str, object] = {"bytes_total": job.data_total,
                                "elapsed_s": round(job.elapsed_ms / 1000, 1)}
    if job.downtime_ms is not None:
        facts["downtime_ms"] = job.downtime_ms
    return facts
