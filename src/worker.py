"""Celery workers: `python -m src.worker [--hosts a,b] [--images] [--together]` (what
`make worker` runs).

Without arguments it starts one worker process per host (every host the database knows) and one
for URL imports, so a slow or dead host delays no other host's work, and supervises them until
SIGTERM or Ctrl-C; --hosts names some hosts (one process each), --together puts the queues
named in one process. A worker consumes its queues (`iaas.host.<name>`, `iaas.images`) with
IAAS_WORKER_CONCURRENCY threads and runs each task step through the same code as the API's
embedded runner; it also takes part in the periodic sweep (one sweep at a time, whatever the
number of workers).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.exceptions import Reject  # type: ignore[import-untyped]

from src.app import Core, build_core
from src.config import Config, start_process
from src.database import hosts as host_dao
from src.database import tasks as task_dao
from src.database.db import Database
from src.services.tasks.broker import (
    IMAGES_QUEUE,
    STEP_TASK,
    celery_app,
    queue_for,
    queue_of,
    send,
)
from src.services.tasks.step_leases import StepLeases

log = logging.getLogger("iaas.worker")
HOSTS_EVERY_S = 30.0  # how often `make worker` looks for hosts added since it started
RESTART_S = 5.0  # a worker that keeps exiting is started again no oftener than this
LEASE_RETRY_S = 5.0  # a step another delivery runs: when to look again
# A step of the same VM in this process: wait this long for it first (the VM's last task has
# ended and its client asked for the next before that step let go of the VM's lease; a 5 s
# look-again each time cost 1 task in 40 five seconds in the throughput benchmark).
LOCAL_WAIT_S = 1.0
REQUEUE_PAUSE_S = 1.0


def run_worker(config: Config, queues: list[str], concurrency: int) -> None:
    """Consume the queues in this process until stopped."""
    core = build_core(config)
    core.hosts.start()
    core.reconciler.start()
    leases = StepLeases(core.db)
    leases.start()
    app = celery_app(config.broker_url)

    @app.task(name=STEP_TASK, bind=True)  # type: ignore[untyped-decorator]
    def step(self: Any, task_id: str, seq: int = 0) -> None:
        try:
            _run_step(app, core, leases, task_id, seq)
        except Exception:  # the database or the broker failed us, not the task's work
            log.exception("step %d of task %s failed; its message goes back to the queue",
                          seq, task_id)
            time.sleep(REQUEUE_PAUSE_S)  # no hot loop while the database or broker is away
            raise Reject(requeue=True) from None

    log.info("worker: %d thread(s) on %s", concurrency, ", ".join(queues))
    try:
        app.Worker(queues=queues, concurrency=concurrency,
                   pool="threads", loglevel="INFO", without_mingle=True, without_gossip=True,
                   hostname=f"iaas-{os.getpid()}@localhost").start()
    finally:
        leases.stop()
        core.reconciler.stop()
        core.hosts.close()


def _run_step(app: Any, core: Core, leases: StepLeases, task_id: str, seq: int) -> None:
    """One delivered step: under its VM's lease, or handed back for later while another
    process runs a step of that VM. Raises: what the database and the broker raise (the work's
    own failures end the task instead)."""
    with core.db.read() as conn:
        task = task_dao.get(conn, task_id)
    if task is None:
        return
    queue, key = queue_for(task), f"vm:{task.vm_id}" if task.vm_id else f"task:{task.id}"
    if not leases.acquire(key, LOCAL_WAIT_S):
        send(app, task_id, queue, seq, LEASE_RETRY_S)
        return
    try:
        core.execution.step(task_id, seq, lambda next_seq, after_s: send(
            app, task_id, queue, next_seq, after_s))
    finally:
        leases.release(key)


def supervise(roles: list[list[str]], concurrency: int,
              more_roles: Callable[[], list[list[str]]] = list,
              look_every_s: float = HOSTS_EVERY_S) -> int:
    """One worker process per role (a host's --hosts, or --images), started again when it
    exits (at most every RESTART_S); more_roles() is asked every look_every_s for roles to add
    (a host added since). SIGTERM or Ctrl-C stops them all."""
    stopping = threading.Event()
    children: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}
    started: dict[tuple[str, ...], float] = {}

    def spawn(role: list[str]) -> None:
        started[tuple(role)] = time.monotonic()
        children[tuple(role)] = subprocess.Popen(
            [sys.executable, "-m", "src.worker", *role, "--concurrency", str(concurrency)])

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for role in roles:
        spawn(role)
    next_look = time.monotonic() + look_every_s
    while not stopping.wait(1.0):
        for ended, child in list(children.items()):
            if child.poll() is not None and time.monotonic() - started[ended] >= RESTART_S:
                log.warning("worker %s exited (%s); starting it again", " ".join(ended),
                            child.returncode)
                spawn(list(ended))
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + look_every_s
            for added in more_roles():
                if tuple(added) not in children:
                    log.info("new host: starting worker %s", " ".join(added))
                    spawn(added)
    return max((child.wait() for child in children.values()), default=0)


def _every_host(config: Config) -> list[list[str]]:
    database = Database(config.db_path)
    with database.read() as conn:
        return [["--hosts", host.name] for host in host_dao.list_all(conn)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.worker")
    parser.add_argument("--hosts", default="",
                        help="comma-separated host names (default: every host, and --images)")
    parser.add_argument("--images", action="store_true", help="run URL imports too")
    parser.add_argument("--together", action="store_true",
                        help="consume every queue named in one process (default: one each)")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--look-every", type=float, default=HOSTS_EVERY_S,
                        help="seconds between looks for hosts added since (default: %(default)s)")
    args = parser.parse_args(argv)
    config = start_process(log)
    if config is None:
        return 2
    if not config.broker_url:
        log.error("IAAS_BROKER_URL is not set: run `make broker` first (tasks run in the API "
                  "process without one)")
        return 2
    concurrency = args.concurrency or config.worker_concurrency
    hosts = [name for name in args.hosts.split(",") if name]
    queues = [queue_of(host) for host in hosts] + ([IMAGES_QUEUE] if args.images else [])
    if args.together or len(queues) == 1:
        run_worker(config, queues, concurrency)
        return 0
    if queues:
        roles = [["--hosts", host] for host in hosts] + ([["--images"]] if args.images else [])
        return supervise(roles, concurrency)
    # Everything: each host the database knows (and those added later), and the imports.
    build_core(config).hosts.close()  # migrates the database and records the local host
    return supervise([*_every_host(config), ["--images"]], concurrency,
                     lambda: _every_host(config), args.look_every)


if __name__ == "__main__":
    sys.exit(main())
