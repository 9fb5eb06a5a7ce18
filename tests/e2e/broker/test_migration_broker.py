"""A migration on Celery workers: the worker that runs it SIGKILLed mid-copy, its message given to
the next worker, which finds out where the VM is: exactly one copy runs, and the rows say where;
and a plain live migration on a worker."""
from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.console import uptime_s
from scripts.harness.host import IsolatedNetwork, purge_domains
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost
from src.config import Config
from tests.e2e.broker.conftest import WorkerFactory
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.test_migration import (
    POOL,
    add_remote,
    booted,
    eventually,
    pool_files_of,
    remote_network,
    running_on,
)

__all__ = ["remote_network"]  # the fixture, used here as in test_migration
HOSTS = ("local", "remote")


@pytest.fixture
def remote_cleanup(remote_host: RemoteHost) -> Iterator[list[str]]:
    installations: list[str] = []
    yield installations
    fresh = remote_host.open()
    try:
        for installation in installations:
            purge_domains(fresh, [], installation)
        remove_pool(fresh, POOL)
    finally:
        fresh.close()


def test_a_live_migration_runs_on_a_worker_and_the_guest_goes_on(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
        remote_host: RemoteHost, remote_network: IsolatedNetwork,
        system_conn: libvirt.virConnect, remote_conn: libvirt.virConnect,
        remote_cleanup: list[str]) -> None:
    app = make_e2e_app(e2e_config)
    remote_cleanup.append(app.installation_id)
    workers(e2e_config, HOSTS)
    with served(app) as client:
        register_tiny_image(client)
        add_remote(client, remote_host, remote_network)
        vm = booted(client)
        before, asked = uptime_s(system_conn, vm["id"]), time.monotonic()
        task = client.wait_task(client.post(f"/v1/vms/{vm['id']}/migrate", {}).body["id"])
        took = time.monotonic() - asked
        assert task["status"] == "succeeded", task
        assert task["progress"]["phase"] == "done"
        assert running_on({"local": system_conn, "remote": remote_conn}, vm["id"]) == ["remote"]
        after = uptime_s(remote_conn, vm["id"])
        print(f"\nlive migration on a Celery worker: {took:.1f} s, guest uptime {before:.1f} s "
              f"-> {after:.1f} s, downtime {task['progress'].get('downtime_ms')} ms")
        assert after >= before + took - 2
        assert client.get(f"/v1/vms/{vm['id']}").body["host"] == "remote"
        assert client.get("/v1/hosts/local").body["allocated"]["vcpus"] == 0
        deleted = client.delete(f"/v1/vms/{vm['id']}")
        assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
        assert pool_files_of(remote_host, vm["id"]) == []


def test_a_worker_killed_mid_migration_leaves_one_running_copy(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
        remote_host: RemoteHost, remote_network: IsolatedNetwork,
        system_conn: libvirt.virConnect, remote_conn: libvirt.virConnect,
        remote_cleanup: list[str]) -> None:
    app = make_e2e_app(e2e_config)
    remote_cleanup.append(app.installation_id)
    slow = replace(e2e_config, migration_max_mbps=1)
    worker = workers(slow, HOSTS)
    with served(app) as client:
        register_tiny_image(client)
        add_remote(client, remote_host, remote_network)
        vm = booted(client)
        task_id = client.post(f"/v1/vms/{vm['id']}/migrate", {"host": "remote"}).body["id"]
        eventually(lambda: (client.get(f"/v1/tasks/{task_id}").body["progress"] or {}
                            ).get("phase") == "transferring", 120, "the copy under way")
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        worker.wait(timeout=10)
        workers(e2e_config, HOSTS)  # the message goes back to the queue and to this one
        task = client.wait_task(task_id)
        where = running_on({"local": system_conn, "remote": remote_conn}, vm["id"])
        shown = client.get(f"/v1/vms/{vm['id']}").body
        print(f"\nworker SIGKILLed mid-migration; the redelivered task {task['status']} "
              f"{time.monotonic() - killed:.1f} s later, the VM runs on {where}")
        assert where == [shown["host"]], (where, shown, task)
        assert task["status"] == "succeeded" or task["error"]["code"] == "migration_interrupted"
        other = "remote" if shown["host"] == "local" else "local"
        assert client.get(f"/v1/hosts/{other}").body["allocated"]["vcpus"] == 0
        deleted = client.delete(f"/v1/vms/{vm['id']}")
        assert client.wait_task(deleted.body["id"])["status"] == "succeeded"
        assert pool_files_of(remote_host, vm["id"]) == []
        assert not (e2e_config.instances_dir / vm["id"]).exists()
