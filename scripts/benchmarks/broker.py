"""(h) Phase 2: create-to-running through RabbitMQ and a Celery worker against the embedded
runner; power-action throughput with 1, 2 and 4 worker processes; a worker's SIGKILL to the
redelivered task's end."""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from scripts.harness.broker import make_vhost, remove_vhost, start_worker, stop_worker
from scripts.harness.host import (
    SYSTEM_URI,
    TINY_IMAGE_NAME,
    IsolatedNetwork,
    purge_domains,
)
from scripts.harness.servers import host_xml
from src.app import App
from src.config import Config
from src.services.tasks.step_leases import PREFIX

from .common import (
    TARGETS,
    Section,
    call,
    live_app,
    median_ms,
    ms,
    register_base,
    side_by_side,
    test_driver_config,
    wait_task,
)
from .create import api_create

MIX = ("pause", "resume", "reboot", "stop", "start")  # each answers at once on the test driver
HOSTS = ("local", "h1", "h2", "h3")


@contextmanager
def _workers(config: Config, layout: list[list[str]], log: Path,
             concurrency: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [start_worker(config, hosts, log, concurrency) for hosts in layout]
    try:
        yield started
    finally:
        for worker in started:
            stop_worker(worker)


@contextmanager
def _broker_config(config: Config) -> Iterator[Config]:
    vhost = make_vhost("iaas-bench")
    try:
        yield replace(config, broker_url=vhost.url)
    finally:
        remove_vhost(vhost)


def create(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork, runs: int) -> Section:
    """API create-to-running: in-process runner against broker + worker, interleaved."""
    base = Config(db_path=root / "in.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                  images_dir=root / "images", instances_dir=root / "instances",
                  network=net.name, max_builds=2, worker_concurrency=2)
    image = {"name": TINY_IMAGE_NAME, "file": "tiny-linux.qcow2", "format": "qcow2"}
    with _broker_config(replace(base, db_path=root / "broker.db")) as via_broker, \
            live_app(base) as (local_app, local_url), \
            live_app(via_broker) as (broker_app, broker_url), \
            _workers(via_broker, [["local"]], root / "worker.log", 2):
        try:
            call(local_url, "POST", "/v1/images", image, status=201)
            call(broker_url, "POST", "/v1/images", image, status=201)
            api_create(local_url)  # one warm-up each, not counted
            api_create(broker_url)
            local_times, broker_times = [], []
            for _ in range(runs):
                local_times.append(api_create(local_url))
                broker_times.append(api_create(broker_url))
        finally:
            local_app.runner.shutdown()
            purge_domains(conn, [], local_app.installation_id)
            purge_domains(conn, [], broker_app.installation_id)
    return side_by_side(
        "Phase 2: create to running through the broker against in-process",
        f"`{SYSTEM_URI}`, TCG, the tiny image, an isolated network; {runs} interleaved runs per "
        "side after one warm-up each, two apps side by side. In-process: the API's own runner "
        "builds. Broker: the API writes the task to its outbox, the relay publishes it to "
        "RabbitMQ, a Celery worker process (2 threads) builds; the client long-polls the task in "
        "both.", "executor", {"in-process": local_times, "broker + worker": broker_times},
        "broker / in-process", TARGETS["broker_create"])


def _power_mix(url: str, vm_ids: list[str], rounds: int) -> tuple[int, float]:
    """Every VM runs MIX rounds times, one action at a time each, all VMs at once; (tasks, s)."""
    done = [0] * len(vm_ids)
    errors: list[BaseException] = []

    def drive(index: int, vm_id: str) -> None:
        try:
            for _ in range(rounds):
                for action in MIX:
                    task = call(url, "POST", f"/v1/vms/{vm_id}/{action}", {}, status=202)
                    wait_task(url, task.body["id"])
                    done[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(i, vm_id)) for i, vm_id in enumerate(vm_ids)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"power mix failed: {errors[0]}")
    return sum(done), elapsed


def _test_hosts(config: Config, url: str, root: Path) -> None:
    for name in HOSTS[1:]:
        path = root / f"{name}.xml"
        path.write_text(host_xml(config.network, cpus=1024, memory_gib=4096))
        call(url, "POST", "/v1/hosts", {"name": name, "uri": f"test://{path}"}, status=201)


def _throughput_once(root: Path, processes: int | None, vms_per_host: int, rounds: int,
                     concurrency: int) -> tuple[int, float]:
    """One fresh platform on four test-driver hosts: None runs in-process, else that many
    worker processes share the four host queues (each host's copy lives in one process)."""
    # Every VM's client is one more connection of 127.0.0.1: above the per-address cap.
    config = replace(test_driver_config(root), reconcile_interval_s=86400, max_builds=8,
                     max_connections_per_address=4 * len(HOSTS) * vms_per_host)
    if processes is None:
        return _mix_on(config, root, vms_per_host, rounds, None, concurrency)
    with _broker_config(config) as via_broker:
        return _mix_on(via_broker, root, vms_per_host, rounds, processes, concurrency)


def _mix_on(config: Config, root: Path, vms_per_host: int, rounds: int,
            processes: int | None, concurrency: int) -> tuple[int, float]:
    with live_app(config) as (_app, url):
        register_base(url)
        _test_hosts(config, url, root)
        layout = [list(HOSTS[i::processes]) for i in range(processes)] if processes else []
        with _workers(config, layout, root / "worker.log", concurrency):
            vm_ids = []
            for host in HOSTS:
                for index in range(vms_per_host):
                    reply = call(url, "POST", "/v1/vms", {
                        "name": f"{host}-{index}", "cpu": 1, "ram": 128, "image_name": "base",
                        "host": host}, status=202)
                    vm_ids.append(reply.body["id"])
                    wait_task(url, reply.body["task"]["id"])
            return _power_mix(url, vm_ids, rounds)


def throughput(root: Path, vms_per_host: int, rounds: int, concurrency: int = 4) -> Section:
    section = Section(
        title="Phase 2: power-action throughput by worker processes",
        method=(f"Four test-driver hosts, {vms_per_host} VMs each; every VM runs "
                f"{' → '.join(MIX)} {rounds} time(s), one task at a time, all VMs at once "
                "(the client waits for each task by long-poll). Each host's test-driver copy "
                "lives in one process, so the four host queues are split over 1, 2 or 4 worker "
                f"processes of {concurrency} threads; in-process is the API's own runner "
                f"(max_builds 8). Every run starts from a fresh database and vhost."),
        header=["executor", "tasks", "seconds", "tasks/s"])
    results = {}
    for label, processes in (("in-process", None), ("1 worker process", 1),
                             ("2 worker processes", 2), ("4 worker processes", 4)):
        tasks, seconds = _throughput_once(root / f"t{processes}", processes, vms_per_host,
                                          rounds, concurrency)
        results[label] = tasks / seconds
        section.rows.append([label, str(tasks), f"{seconds:.1f}", f"{tasks / seconds:.1f}"])
    scale = results["4 worker processes"] / results["1 worker process"]
    against = results["4 worker processes"] / results["in-process"]
    section.judge(TARGETS["broker_scale"], scale, f"{scale:.2f}x")
    section.judge(TARGETS["broker_inprocess"], against, f"{against:.2f}x")
    section.notes.append(
        f"4 processes / 1 process: **{scale:.2f}x**; 4 processes / in-process: "
        f"**{against:.2f}x**; 1 process / in-process: "
        f"{results['1 worker process'] / results['in-process']:.2f}x")
    return section


def redelivery(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork,
               runs: int) -> Section:
    """SIGKILL the worker that builds, with a second worker on the same queue: seconds from the
    kill to the redelivered task's end (and what the build had cost without the kill)."""
    base = Config(db_path=root / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                  images_dir=root / "images", instances_dir=root / "instances",
                  network=net.name, max_builds=2)
    after_kill, plain = [], []
    with _broker_config(base) as config, live_app(config) as (app, url):
        try:
            call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME, "file": "tiny-linux.qcow2",
                                             "format": "qcow2"}, status=201)
            for run in range(runs):
                with _workers(config, [["local"], ["local"]], root / "worker.log", 1) as pair:
                    after_kill.append(_kill_mid_build(app, url, pair, run))
                    plain.append(api_create(url))  # on the surviving worker, now warm
        finally:
            purge_domains(conn, [], app.installation_id)
    section = Section(
        title="Phase 2: a worker SIGKILLed mid-build",
        method=(f"`{SYSTEM_URI}`, TCG, the tiny image; two worker processes on the host's queue. "
                f"{runs} creates: once the task is running, SIGKILL the worker holding its step "
                "lease; RabbitMQ hands the unacknowledged message to the other worker, which "
                "removes what the first attempt left and builds again."),
        header=["measure", "median", "max"])
    section.rows.append(["SIGKILL → redelivered task succeeded", median_ms(after_kill),
                         ms(max(after_kill))])
    section.rows.append(["a whole create without a kill (same run)", median_ms(plain),
                         ms(max(plain))])
    return section


def _kill_mid_build(app: App, url: str, pair: list[subprocess.Popen[bytes]], run: int) -> float:
    reply = call(url, "POST", "/v1/vms", {"name": f"kill-{run}", "cpu": 1, "ram": 256,
                                          "image_name": TINY_IMAGE_NAME}, status=202)
    task_id = reply.body["task"]["id"]
    holder = None
    deadline = time.monotonic() + 60
    while holder is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the build never started")
        with app.db.read() as db:
            row = db.execute("SELECT holder FROM leases WHERE name = ?",
                             (f"{PREFIX}vm:{reply.body['id']}",)).fetchone()
        holder = row[0] if row else None
        time.sleep(0.005)
    pid = int(holder.split(":")[2])  # host:pid-namespace:pid:tag
    victim = next(worker for worker in pair if worker.pid == pid)
    victim.kill()
    killed = time.perf_counter()
    wait_task(url, task_id)
    elapsed = time.perf_counter() - killed
    deleting = call(url, "DELETE", f"/v1/vms/{reply.body['id']}", status=202)
    wait_task(url, deleting.body["id"])
    return elapsed
