"""DAO for the tasks table: one row per asynchronous action on a VM (or an image's import)."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from src.vocabulary import ACTIVE_TASK_STATUSES as ACTIVE

# Written out, not bound: only a literal list lets SQLite use the partial indexes on status.
_ACTIVE_SQL = "(" + ", ".join(f"'{status}'" for status in ACTIVE) + ")"


@dataclass(frozen=True)
class TaskRow:
    id: str
    vm_id: str | None  # None: an image's task (image_id)
    action: str
    status: str
    error_code: str | None
    error_message: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    request_id: str | None = None
    deadline: str | None = None
    project: str = "default"
    host: str | None = None  # the VM's host when the task was asked for
    # JSON: what the work needs (a create: its versioned build record, under "build",
    # src/services/vms/build_record.py; other actions: their "args"), and its next "step".
    payload: str = "{}"
    attempts: int = 0  # starts: more than one means a worker died during an earlier one
    executor: str = "inprocess"  # inprocess, or celery (published through the outbox)
    image_id: str | None = None  # the image an import fills
    volume_id: str | None = None  # the volume a volume or attachment task works on
    reason: str | None = None  # why the platform asked for it (a stop for a reservation)
    progress: str | None = None  # JSON a long task reports while it runs (a migration's bytes)


_COLUMNS = ("id, vm_id, action, status, error_code, error_message, created_at, started_at, "
            "finished_at, request_id, deadline, project, host, payload, attempts, executor, "
            "image_id, volume_id, reason, progress")
_MARKS = ", ".join("?" * len(_COLUMNS.split(", ")))


def insert(conn: sqlite3.Connection, task: TaskRow) -> None:
    """Raises: sqlite3.IntegrityError when the VM already has a queued or running task."""
    conn.execute(f"INSERT INTO tasks ({_COLUMNS}) VALUES ({_MARKS})",
                 (task.id, task.vm_id, task.action, task.status, task.error_code,
                  task.error_message, task.created_at, task.started_at, task.finished_at,
                  task.request_id, task.deadline, task.project, task.host, task.payload,
                  task.attempts, task.executor, task.image_id, task.volume_id, task.reason,
                  task.progress))


def get(conn: sqlite3.Connection, task_id: str) -> TaskRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return TaskRow(**row) if row else None


def active_for_vm(conn: sqlite3.Connection, vm_id: str) -> TaskRow | None:
    """The VM's newest unfinished task, if any."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE vm_id = ? AND status IN {_ACTIVE_SQL} "
                       "ORDER BY created_at DESC LIMIT 1", (vm_id,)).fetchone()
    return TaskRow(**row) if row else None


def has_reason(conn: sqlite3.Connection, vm_id: str, action: str, prefix: str) -> bool:
    """Whether the VM's history holds a task of action whose reason begins with prefix."""
    return conn.execute("SELECT 1 FROM tasks WHERE vm_id = ? AND action = ? AND "
                        "substr(reason, 1, length(?)) = ? LIMIT 1",
                        (vm_id, action, prefix, prefix)).fetchone() is not None


def active_by_vm(conn: sqlite3.Connection) -> dict[str, TaskRow]:
    """Every VM's newest unfinished task, in one query."""
    result: dict[str, TaskRow] = {}
    for row in conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE status IN {_ACTIVE_SQL} "
                            "AND vm_id IS NOT NULL ORDER BY created_at"):
        result[row["vm_id"]] = TaskRow(**row)
    return result


def list_active(conn: sqlite3.Connection) -> list[TaskRow]:
    return [TaskRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE status IN {_ACTIVE_SQL} ORDER BY created_at")]


def list_for_vm(conn: sqlite3.Connection, vm_id: str, limit: int) -> list[TaskRow]:
    """The VM's tasks, newest first."""
    return [TaskRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE vm_id = ? ORDER BY created_at DESC, rowid DESC "
        "LIMIT ?", (vm_id, limit))]


def mark_running(conn: sqlite3.Connection, task_id: str, now: str, deadline: str) -> bool:
    """Start a queued task; False if it already ended (cancelled or timed out)."""
    cursor = conn.execute("UPDATE tasks SET status = 'running', started_at = ?, deadline = ?, "
                          "attempts = attempts + 1 WHERE id = ? AND status = 'queued'",
                          (now, deadline, task_id))
    return cursor.rowcount == 1


def count_attempt(conn: sqlite3.Connection, task_id: str) -> None:
    """A running task started again (its message came back after its worker died)."""
    conn.execute("UPDATE tasks SET attempts = attempts + 1 WHERE id = ?", (task_id,))


def set_payload(conn: sqlite3.Connection, task_id: str, payload: str) -> None:
    """Only while the task has not ended (an ended task's payload, user-data included, is
    gone for good)."""
    conn.execute(f"UPDATE tasks SET payload = ? WHERE id = ? AND status IN {_ACTIVE_SQL}",
                 (payload, task_id))


def ended_among(conn: sqlite3.Connection, task_ids: list[str]) -> list[str]:
    """Those of task_ids that have ended or are gone."""
    marks = ", ".join("?" * len(task_ids))
    active = {row[0] for row in conn.execute(
        f"SELECT id FROM tasks WHERE id IN ({marks}) AND status IN {_ACTIVE_SQL}", task_ids)}
    return [task_id for task_id in task_ids if task_id not in active]


def set_progress(conn: sqlite3.Connection, task_id: str, progress: str) -> None:
    """Only while the task runs: a report that comes after its end changes nothing."""
    conn.execute("UPDATE tasks SET progress = ? WHERE id = ? AND status = 'running'",
                 (progress, task_id))


def stale_queued(conn: sqlite3.Connection, executor: str, before: str,
                 limit: int = 100) -> list[TaskRow]:
    """Tasks of executor still queued since before (their message never reached a worker);
    a drain's moves, which wait their turn, are not."""
    return [TaskRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE status = 'queued' AND executor = ? "
        "AND created_at < ? AND json_extract(payload, '$.args.drain') IS NULL "
        "ORDER BY created_at LIMIT ?", (executor, before, limit))]


def unpublished(conn: sqlite3.Connection, limit: int) -> list[TaskRow]:
    """Queued broker tasks the relay has not handed to the broker yet, oldest first."""
    return [TaskRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE published_at IS NULL AND status = 'queued' "
        "AND executor = 'celery' ORDER BY created_at LIMIT ?", (limit,))]


def mark_published(conn: sqlite3.Connection, task_id: str, now: str) -> None:
    conn.execute("UPDATE tasks SET published_at = ? WHERE id = ?", (now, task_id))


def count_unpublished(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM tasks WHERE published_at IS NULL "
                            "AND status = 'queued' AND executor = 'celery'").fetchone()[0])


def finish(conn: sqlite3.Connection, task_id: str, now: str,
           error: tuple[str, str] | None = None) -> bool:
    """Mark an unfinished task succeeded, or failed with (code, message); False if it had ended."""
    code, message = error if error else (None, None)
    cursor = conn.execute(  # the payload may hold user-data: it goes once the task has ended
        "UPDATE tasks SET status = ?, error_code = ?, error_message = ?, finished_at = ?, "
        "started_at = coalesce(started_at, ?), payload = '{}' "
        f"WHERE id = ? AND status IN {_ACTIVE_SQL}",
        ("failed" if error else "succeeded", code, message, now, now, task_id))
    return cursor.rowcount == 1


def overdue(conn: sqlite3.Connection, now: str) -> list[TaskRow]:
    """Running tasks whose deadline has passed."""
    return [TaskRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE status = 'running' AND deadline < ?", (now,))]


def count_running(conn: sqlite3.Connection, project: str, action: str) -> int:
    """The project's running tasks of action (the running ones are few: a partial index)."""
    return int(conn.execute("SELECT count(*) FROM tasks "
                            "WHERE status = 'running' AND project = ? AND action = ?",
                            (project, action)).fetchone()[0])


def count_running_of(conn: sqlite3.Connection, project: str) -> int:
    """The project's running tasks, of every action (a partial index holds the running ones)."""
    return int(conn.execute("SELECT count(*) FROM tasks WHERE status = 'running' AND project = ?",
                            (project,)).fetchone()[0])


def delete_for_vms(conn: sqlite3.Connection, vm_ids: list[str]) -> None:
    conn.executemany("DELETE FROM tasks WHERE vm_id = ?", [(vm_id,) for vm_id in vm_ids])


def count_by_action_and_status(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """From the counts triggers keep (migration 008): no scan of tasks, however many."""
    return {(action, status): count for action, status, count in conn.execute(
        "SELECT action, status, count FROM task_counts WHERE count > 0")}


def purge_finished_of_deleted_vms(conn: sqlite3.Connection, before: str, batch: int) -> int:
    """Delete up to batch finished tasks older than before whose VM (or image) is gone; return
    how many."""
    return conn.execute(
        "DELETE FROM tasks WHERE rowid IN (SELECT t.rowid FROM tasks t "
        "WHERE t.status IN ('succeeded', 'failed') AND t.finished_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.id = t.vm_id) "
        "AND NOT EXISTS (SELECT 1 FROM images i WHERE i.id = t.image_id) LIMIT ?)",
        (before, batch)).rowcount


LatencyKey = tuple[str, str, str]  # (phase, action, executor)


def latency_histograms(conn: sqlite3.Connection) -> dict[LatencyKey, list[tuple[float, int, float]]]:
    """Cumulative (le, count, sum) buckets the latency triggers keep (migration 014), every
    bucket present (0 below the first observation), in ascending order."""
    bounds = [row[0] for row in conn.execute("SELECT le FROM latency_buckets ORDER BY le")]
    kept: dict[LatencyKey, dict[float, tuple[int, float]]] = {}
    for phase, action, executor, le, count, total in conn.execute(
            "SELECT phase, action, executor, le, count, sum FROM task_latency"):
        kept.setdefault((phase, action, executor), {})[le] = (count, total)
    return {key: [(le, *buckets.get(le, (0, 0.0))) for le in bounds]
            for key, buckets in kept.items()}


def active_for_volume(conn: sqlite3.Connection, volume_id: str,
                      volume_tasks_only: bool = False) -> TaskRow | None:
    """An unfinished task of the volume, if any; volume_tasks_only: not an attach or detach
    (of those several may run at once; of the others one, by a unique index)."""
    only = " AND action NOT IN ('attach', 'detach')" if volume_tasks_only else ""
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE volume_id = ? AND status IN "
                       f"{_ACTIVE_SQL}{only} LIMIT 1", (volume_id,)).fetchone()
    return TaskRow(**row) if row else None


def active_by_volume(conn: sqlite3.Connection) -> dict[str, TaskRow]:
    """Every volume's unfinished task, in one query."""
    return {row["volume_id"]: TaskRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE status IN {_ACTIVE_SQL} AND volume_id IS NOT NULL")}


def hand_on(conn: sqlite3.Connection, task_id: str, host: str, executor: str, payload: str,
            now: str) -> bool:
    """A create whose VM waited for capacity (executor 'queue') goes to a real executor now that
    it is placed; its queue time starts again (created_at), since IAAS_TASK_QUEUE_TIMEOUT is
    about an executor's queue, not about the wait for capacity. False unless it still waited."""
    return conn.execute(
        "UPDATE tasks SET host = ?, executor = ?, payload = ?, created_at = ? "
        "WHERE id = ? AND status = 'queued' AND executor = 'queue'",
        (host, executor, payload, now, task_id)).rowcount == 1
