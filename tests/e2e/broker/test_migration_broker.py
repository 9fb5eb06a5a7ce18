"""A migration on Celery workers: the worker that runs it SIGKILLed mid-copy, its message given to
the next worker, which finds out where the VM is: exactly one copy runs, and the rows say where;
and a plain live migration on a worker."""
from __future__ import annotations

import signal
import time
from dataclasses import replace
from typing import Any

import pytest

from scripts.harness.console import uptime_s
from src.app import App
from tests.e2e.broker.conftest import WorkerFactory
from tests.e2e.conftest import TwoHosts
from tests.e2e.test_migration import (
    booted,
    deleted_everywhere,
    one_copy_runs,
    running_on,
    transferring,
)

HOSTS = ("local", "remote")


@pytest.fixture
def api(two_hosts: TwoHosts) -> App:
    """The API (migrated before any worker opens its database), recording, not running."""
    return two_hosts.make_app(two_hosts.config)


def conns(two_hosts: TwoHosts) -> dict[str, Any]:
    return {"local": two_hosts.system_conn, "remote": two_hosts.remote_conn}


def test_a_live_migration_runs_on_a_worker_and_the_guest_goes_on(
        two_hosts: TwoHosts, api: App, workers: WorkerFactory) -> None:
    workers(two_hosts.config, HOSTS)
    with two_hosts.serve(api) as client:
        vm = booted(client)
        before, asked = uptime_s(two_hosts.system_conn, vm["id"]), time.monotonic()
        task = client.wait_task(client.post(f"/v1/vms/{vm['id']}/migrate", {}).body["id"])
        took = time.monotonic() - asked
        assert task["status"] == "succeeded", task
        assert task["progress"]["phase"] == "done"
        assert running_on(conns(two_hosts), vm["id"]) == ["remote"]
        after = uptime_s(two_hosts.remote_conn, vm["id"])
        print(f"\nlive migration on a Celery worker: {took:.1f} s, guest uptime {before:.1f} s "
              f"-> {after:.1f} s, downtime {task['progress'].get('downtime_ms')} ms")
        assert after >= before + took - 2
        assert client.get(f"/v1/vms/{vm['id']}").body["host"] == "remote"
        assert client.get("/v1/hosts/local").body["allocated"]["vcpus"] == 0
        deleted_everywhere(client, two_hosts.remote, two_hosts.config, vm["id"])


def test_a_worker_killed_mid_migration_leaves_one_running_copy(
        two_hosts: TwoHosts, api: App, workers: WorkerFactory) -> None:
    worker = workers(replace(two_hosts.config, migration_max_mbps=1), HOSTS)  # a slow copy
    with two_hosts.serve(api) as client:
        vm = booted(client)
        task_id = client.post(f"/v1/vms/{vm['id']}/migrate", {"host": "remote"}).body["id"]
        transferring(client, task_id)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        workers(two_hosts.config, HOSTS)  # the message goes back to the queue and to this one
        one_copy_runs(client, conns(two_hosts), task_id, vm["id"],
                      "worker SIGKILLed mid-migration, its message redelivered")
        deleted_everywhere(client, two_hosts.remote, two_hosts.config, vm["id"])
