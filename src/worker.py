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
from typing import Any

from src.app import Core, build_core
from src.config import Config, ConfigError, load_config
from src.database import tasks as task_dao
from src.services.broker import (
    IMAGES_QUEUE,
    STEP_TASK,
    celery_app,
    queue_for,
    queue_of,
    send,
)
from src.services.step_leases import StepLeases

log = logging.getLogger("iaas.worker")
LEASE_RETRY_S = 5.0  # a step another delivery runs: when to look again


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
        if not leases.acquire(task_id):  # its step runs elsewhere: look again later
            send(app, task_id, _queue_of(core, task_id), seq, LEASE_RETRY_S)
            return
        try:
            core.execution.step(task_id, seq, lambda next_seq, after_s: send(
                app, task_id, _queue_of(core, task_id), next_seq, after_s))
        finally:
            leases.release(task_id)

    log.info("worker: %d thread(s) on %s", concurrency, ", ".join(queues))
    try:
        app.Worker(queues=queues, concurrency=concurrency,
                   pool="threads", loglevel="INFO", without_mingle=True, without_gossip=True,
                   hostname=f"iaas-{os.getpid()}@localhost").start()
    finally:
        leases.stop()
        core.reconciler.stop()
        core.hosts.close()


def _queue_of(core: Core, task_id: str) -> str:
    with core.db.read() as conn:
        task = task_dao.get(conn, task_id)
    return queue_for(task) if task else queue_of("local")


def supervise(roles: list[list[str]], concurrency: int) -> int:
    """One worker process per role (a host's --hosts, or --images); SIGTERM or Ctrl-C stops
    them all."""
    children = [subprocess.Popen([sys.executable, "-m", "src.worker", *role, "--concurrency",
                                  str(concurrency)]) for role in roles]

    def stop(_signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return max(child.wait() for child in children)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.worker")
    parser.add_argument("--hosts", default="",
                        help="comma-separated host names (default: every host, and --images)")
    parser.add_argument("--images", action="store_true", help="run URL imports too")
    parser.add_argument("--together", action="store_true",
                        help="consume every queue named in one process (default: one each)")
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
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
    roles = [["--hosts", host] for host in hosts] + ([["--images"]] if args.images else [])
    if not queues:  # everything: each host the database knows, and the imports
        core = build_core(config)
        roles = [["--hosts", host.name] for host in core.hosts.all()] + [["--images"]]
        core.hosts.close()
    return supervise(roles, concurrency)


if __name__ == "__main__":
    sys.exit(main())
