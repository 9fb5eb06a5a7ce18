"""(f) GET /v1/vms of 1,000 VMs with a million finished tasks in the table, against none."""
from __future__ import annotations

import time
from pathlib import Path

from src.app import App

from .common import (
    TARGETS,
    Section,
    call,
    create_vms,
    live_app,
    median_ms,
    ms,
    percentile,
    register_base,
    test_driver_config,
)


def _add_finished_tasks(app: App, count: int) -> float:
    """count finished tasks of deleted VMs, written in one transaction; seconds taken."""
    started = time.perf_counter()
    with app.db.write() as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO tasks (id, vm_id, action, status, created_at, started_at, finished_at) "
            "SELECT printf('bench-%08d', i), printf('gone-%06d', i / 10), 'stop', 'succeeded', "
            "'2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', "
            "'2026-01-01T00:00:01.000000Z' FROM n", (count,))
    return time.perf_counter() - started


def _measure(url: str, requests: int) -> list[float]:
    for _ in range(max(5, requests // 10)):
        call(url, "GET", "/v1/vms")
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        call(url, "GET", "/v1/vms")
        times.append(time.perf_counter() - started)
    return times


def run(root: Path, vms: int, tasks: int, requests: int) -> Section:
    section = Section(
        title="Listing beside a long task history",
        method=(f"`GET /v1/vms` of {vms:,} VMs over HTTP (wsgiref, test driver), {requests} "
                f"requests with no finished tasks of deleted VMs, then again after {tasks:,} such "
                "tasks were added to the table (what a busy year leaves before retention). The "
                "active-task query reads a partial index, so history should not matter."),
        header=["finished tasks", "median", "p95", "ratio of medians"])
    with live_app(test_driver_config(root)) as (app, url):
        register_base(url)
        create_vms(url, vms)
        empty = _measure(url, requests)
        seconds = _add_finished_tasks(app, tasks)
        full = _measure(url, requests)
    base = sorted(empty)[len(empty) // 2]
    for label, times in (("0", empty), (f"{tasks:,}", full)):
        ratio = sorted(times)[len(times) // 2] / base
        section.rows.append([label, median_ms(times), ms(percentile(times, 95)), f"{ratio:.2f}"])
    ratio = sorted(full)[len(full) // 2] / base
    section.judge(TARGETS["history"], ratio, f"{ratio:.2f}")
    section.notes.append(f"Writing the {tasks:,} rows took {seconds:.1f} s (one transaction, "
                         "task-count triggers included).")
    return section
