"""Nothing accepted is lost: a worker killed mid-build, RabbitMQ killed during a churn, creates
accepted while it is down, a duplicate message, and one host's daemon stopped while another
host's work goes on. The RabbitMQ killed is one of this module's own (scripts/harness/
own_broker.py): the machine's broker, which other runs use meanwhile, is never touched."""
from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import (
    IsolatedNetwork,
    purge_domains,
    start_isolated_network,
)
from scripts.harness.own_broker import OwnBroker, start_own_broker
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost
from src.app import App
from src.config import Config
from src.database import tasks as task_dao
from src.database.db import BUSY_TIMEOUT_S
from src.services.tasks.broker import celery_app, queue_of, send
from tests.e2e.broker.conftest import WorkerFactory
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, running, served
from tests.e2e.http_client import HttpClient
from tests.support import scrape

VM = {"cpu": 1, "ram": 128, "image_name": "tiny-linux"}


def create(client: HttpClient, **fields: Any) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": f"e2e-{secrets.token_hex(4)}", **VM, **fields})
    assert reply.status == 202, reply.body
    return dict(reply.body)


def domains_of(conn: libvirt.virConnect, vm_id: str) -> int:
    return sum(1 for domain in conn.listAllDomains() if domain.UUIDString() == vm_id)


def tasks_of(app: App) -> list[task_dao.TaskRow]:
    with app.db.read() as conn:
        return [task_dao.TaskRow(**row) for row in conn.execute(
            f"SELECT {task_dao._COLUMNS} FROM tasks")]


def all_ended(app: App, deadline_s: float) -> list[task_dao.TaskRow]:
    deadline = time.monotonic() + deadline_s
    while any(task.status in ("queued", "running") for task in tasks_of(app)):
        assert time.monotonic() < deadline, [t for t in tasks_of(app) if t.status != "succeeded"]
        time.sleep(0.5)
    return tasks_of(app)


def test_a_worker_killed_mid_build_leaves_one_domain_and_no_orphan(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
        system_conn: libvirt.virConnect) -> None:
    app = make_e2e_app(e2e_config)
    worker = workers(e2e_config)
    with served(app) as client:
        register_tiny_image(client)
        vm = create(client)
        deadline = time.monotonic() + 60
        while tasks_of(app)[0].status == "queued":  # kill it while it builds
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        worker.wait(timeout=10)
        workers(e2e_config)  # the message goes back to the queue and to this one
        task = client.wait_task(vm["task"]["id"])
        print(f"\nworker SIGKILLed mid-build; the redelivered task ended "
              f"{time.monotonic() - killed:.1f} s later ({task['status']})")
        shown = client.get(f"/v1/vms/{vm['id']}").body
        assert task["status"] == "succeeded" or shown["error"], (task, shown)
        assert domains_of(system_conn, vm["id"]) == (1 if shown["status"] == "running" else 0)
        assert client.get("/v1/admin/orphans").body == {"domains": [], "folders": [], "volumes": []}
        assert all(t.status != "running" for t in tasks_of(app))


def test_duplicate_delivery_of_a_finished_task_changes_nothing(
        e2e_app: App, live_client: HttpClient, e2e_config: Config,
        system_conn: libvirt.virConnect) -> None:
    register_tiny_image(live_client)
    vm = create(live_client)
    assert live_client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    send(celery_app(e2e_config.broker_url), vm["task"]["id"], queue_of("local"), seq=0,
         countdown=0)
    time.sleep(3)  # the worker has long taken it
    assert domains_of(system_conn, vm["id"]) == 1
    assert [t.attempts for t in tasks_of(e2e_app)] == [1]
    assert live_client.get(f"/v1/vms/{vm['id']}").body["status"] == "running"


@pytest.fixture(scope="module")
def own_broker() -> Iterator[OwnBroker]:
    """A RabbitMQ node of this module's own, which its tests may kill."""
    yield from running(lambda: start_own_broker("iaas-e2e-mq"))


@pytest.fixture
def outage_app(make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
               own_broker: OwnBroker) -> Iterator[App]:
    """An app and a worker on own_broker; whatever the test does to it, it runs afterwards."""
    config = replace(e2e_config, broker_url=own_broker.make_vhost().url)
    app = make_e2e_app(config)  # migrates the database before the worker opens it
    workers(config)
    yield app
    if not own_broker.beam_pids():
        own_broker.start()


@pytest.fixture
def outage_client(outage_app: App) -> Iterator[HttpClient]:
    with served(outage_app) as client:
        yield client


def test_creates_accepted_while_rabbitmq_is_down_run_once_it_is_back(
        outage_app: App, outage_client: HttpClient, own_broker: OwnBroker) -> None:
    e2e_app, live_client = outage_app, outage_client
    register_tiny_image(live_client)
    own_broker.kill()
    accepted = [create(live_client) for _ in range(3)]  # 202: they wait in the outbox
    samples = scrape(e2e_app)
    assert samples[("iaas_outbox_unpublished", ())] == 3
    assert not [name for name, _ in samples if name == "iaas_queue_depth"]  # the broker is away
    own_broker.start()
    for vm in accepted:
        assert live_client.wait_task(vm["task"]["id"], 180)["status"] == "succeeded"
    assert [t.attempts for t in all_ended(e2e_app, 60)] == [1, 1, 1]


def test_rabbitmq_killed_during_a_churn_loses_nothing_and_runs_nothing_twice(
        outage_app: App, outage_client: HttpClient, own_broker: OwnBroker,
        system_conn: libvirt.virConnect) -> None:
    e2e_app, live_client = outage_app, outage_client
    register_tiny_image(live_client)
    stop = threading.Event()
    accepted: list[str] = []
    failures: list[BaseException] = []

    def churn() -> None:
        try:
            churn_until_stopped()
        except BaseException as exc:  # a task that never ended must fail the test, not a thread
            failures.append(exc)
            raise

    def churn_until_stopped() -> None:
        while not stop.is_set():
            reply = live_client.post("/v1/vms", {"name": f"c-{secrets.token_hex(4)}", **VM})
            if reply.status != 202:
                time.sleep(0.2)
                continue
            accepted.append(reply.body["task"]["id"])
            task = live_client.wait_task(reply.body["task"]["id"], 60)
            if task["status"] == "succeeded":
                deleted = live_client.delete(f"/v1/vms/{reply.body['id']}")
                if deleted.status == 202:
                    accepted.append(deleted.body["id"])

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(4)
        own_broker.kill()
        time.sleep(4)
        own_broker.start()
        time.sleep(6)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=240)
    assert not failures, failures
    tasks = {task.id: task for task in all_ended(e2e_app, 180)}
    assert accepted and set(accepted) <= set(tasks)
    assert {tasks[task_id].status for task_id in accepted} == {"succeeded"}
    assert {task.attempts for task in tasks.values()} == {1}  # none ran twice
    with e2e_app.db.read() as conn:
        left = [row[0] for row in conn.execute("SELECT id FROM vms")]
    assert sorted(d.UUIDString() for d in system_conn.listAllDomains()
                  if d.UUIDString() in tasks_vm_ids(tasks)) == sorted(left)
    print(f"\nchurn: {len(accepted)} accepted tasks, all ended once, across a broker restart")


def tasks_vm_ids(tasks: dict[str, task_dao.TaskRow]) -> set[str]:
    return {task.vm_id for task in tasks.values()}


def test_a_stopped_host_delays_no_other_hosts_work(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory,
        remote_host: RemoteHost, remote_conn: libvirt.virConnect) -> None:
    net: IsolatedNetwork = start_isolated_network(remote_conn, "iaas-e2e-bn")
    app = make_e2e_app(e2e_config)
    try:
        with served(app) as client:
            register_tiny_image(client)
            assert client.post("/v1/hosts", {
                "name": "remote", "uri": remote_host.uri, "storage": "pool",
                "storage_pool": "iaas-e2e-b", "network": net.name,
                "domain_type": "qemu"}).status == 201
            workers(e2e_config, ("local",))
            workers(e2e_config, ("remote",))
            baseline = _create_seconds(client, "local")
            os.kill(remote_host.pid, signal.SIGSTOP)  # hung, not dead: calls to it block
            try:
                stuck = create(client, host="remote")
                took = _create_seconds(client, "local")
                print(f"\nlocal create {baseline:.2f} s alone, {took:.2f} s while the other "
                      "host's daemon is stopped")
                assert took < baseline + 5
            finally:
                os.kill(remote_host.pid, signal.SIGCONT)
            assert client.wait_task(stuck["task"]["id"], 180)["status"] == "succeeded"
    finally:
        fresh = remote_host.open()
        try:
            purge_domains(fresh, [], app.installation_id)
            remove_pool(fresh, "iaas-e2e-b")
            fresh.networkLookupByName(net.name).destroy()
            fresh.networkLookupByName(net.name).undefine()
        finally:
            fresh.close()


def _create_seconds(client: HttpClient, host: str) -> float:
    started = time.monotonic()
    vm = create(client, host=host)
    assert client.wait_task(vm["task"]["id"], 120)["status"] == "succeeded"
    return time.monotonic() - started


def test_a_step_the_database_refuses_goes_back_to_the_queue_and_runs_later(
        make_e2e_app: E2eAppFactory, e2e_config: Config, workers: WorkerFactory) -> None:
    """A worker whose database write fails (locked past the busy timeout) must not acknowledge
    the message: it goes back to the queue and the task runs once the database answers."""
    app = make_e2e_app(e2e_config)
    worker = workers(e2e_config)
    with served(app) as client:
        register_tiny_image(client)
        assert client.wait_task(create(client)["task"]["id"])["status"] == "succeeded"
        worker.send_signal(signal.SIGSTOP)  # up and idle; it takes the next message later
        vm = create(client)
        holder = sqlite3.connect(e2e_config.db_path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # every write elsewhere now waits, then fails
            worker.send_signal(signal.SIGCONT)
            time.sleep(BUSY_TIMEOUT_S + 5)  # the worker's write gave up at least once
        finally:
            worker.send_signal(signal.SIGCONT)
            holder.execute("ROLLBACK")
            holder.close()
        assert client.wait_task(vm["task"]["id"], 120)["status"] == "succeeded"
        assert client.get(f"/v1/vms/{vm['id']}").body["status"] == "running"
