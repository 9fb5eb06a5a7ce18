"""(g) Many hosts: scheduling time as hosts grow, listing over 4 hosts against 1, and
create-to-running on a second host reached over TLS against the local one."""
from __future__ import annotations

import secrets
import statistics
import time
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import TINY_IMAGE_NAME, IsolatedNetwork, purge_domains
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost, host_entry
from scripts.harness.servers import host_xml
from src.config import Config
from src.services.rules.placement import Demand, Free
from src.services.rules.scheduler import Candidate, schedule

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
    side_by_side,
    test_driver_config,
    wait_task,
)


def _add_hosts(url: str, root: Path, count: int, memory_gib: int = 4096) -> None:
    for index in range(count):
        path = root / f"extra-{index}.xml"
        path.write_text(host_xml("iaas-bench", cpus=1024, memory_gib=memory_gib))
        call(url, "POST", "/v1/hosts", {"name": f"h{index:04d}", "uri": f"test://{path}"},
             status=201)


def _timed_creates(url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = call(url, "POST", "/v1/vms", {"name": f"s-{secrets.token_hex(4)}", "cpu": 1,
                                              "ram": 128, "image_name": "base"}, status=202)
        times.append(time.perf_counter() - started)
        wait_task(url, reply.body["task"]["id"])
    return times


def _pure_schedule_ms(hosts: int, rounds: int = 200) -> float:
    free = Free(vcpus=4096, ram_mib=1 << 22, gpus=[], cpus={0: list(range(64))}, disk_gb=1 << 20)
    candidates = [Candidate(f"h{i:04d}", True, True, free) for i in range(hosts)]
    demand = Demand(cpu=1, ram=128, disk_gb=1)
    started = time.perf_counter()
    for _ in range(rounds):
        schedule(demand, candidates, "spread")
    return (time.perf_counter() - started) / rounds * 1000


def scheduling(root: Path, sizes: tuple[int, ...], creates: int) -> Section:
    section = Section(
        title="Scheduling across many hosts",
        method=(f"Test-driver hosts added through `POST /v1/hosts`; at each size, {creates} "
                "`POST /v1/vms` over HTTP (wsgiref) timed to their 202, each waited for. The "
                "create holds the scheduling decision inside its write transaction: reading what "
                "each host holds and has free, filtering, weighing. Beside it, the pure "
                "scheduler's time for the same number of hosts."),
        header=["hosts", "create median", "create p95", "scheduler alone"])
    for size in sizes:
        with live_app(test_driver_config(root / f"s{size}")) as (_app, url):
            register_base(url)
            _add_hosts(url, root / f"s{size}", size - 1)
            times = _timed_creates(url, creates)
        section.rows.append([f"{size:,}", median_ms(times), ms(percentile(times, 95)),
                             f"{_pure_schedule_ms(size):.2f} ms"])
        if size == 1000:
            median = statistics.median(times) * 1000
            section.judge(TARGETS["hosts_create"], median, f"{median:.1f} ms")
    return section


def listing(root: Path, vms: int, requests: int) -> Section:
    section = Section(
        title="Listing VMs spread over four hosts",
        method=(f"`GET /v1/vms` of {vms:,} VMs over HTTP (wsgiref, test driver), {requests} "
                "requests: all on one host, then spread over four (one bulk libvirt call per "
                "host, made in parallel)."),
        header=["hosts", "median", "p95", "ratio of medians"])
    results = {}
    for hosts in (1, 4):
        with live_app(test_driver_config(root / f"l{hosts}")) as (_app, url):
            register_base(url)
            _add_hosts(url, root / f"l{hosts}", hosts - 1)
            create_vms(url, vms)
            for _ in range(10):
                call(url, "GET", "/v1/vms")
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                call(url, "GET", "/v1/vms")
                times.append(time.perf_counter() - started)
        results[hosts] = times
    base = statistics.median(results[1])
    for hosts, times in results.items():
        section.rows.append([str(hosts), median_ms(times), ms(percentile(times, 95)),
                             f"{statistics.median(times) / base:.2f}"])
    ratio = statistics.median(results[4]) / base
    section.judge(TARGETS["list_hosts"], ratio, f"{ratio:.2f}")
    section.notes.append(f"ratio 4 hosts / 1 host: **{ratio:.2f}**")
    return section


def remote_create(config: Config, remote: RemoteHost, remote_net: IsolatedNetwork,
                  runs: int) -> Section:
    """Create-to-running pinned to the local host and to the TLS host, interleaved."""
    pool = "iaas-bench"
    with live_app(config) as (app, url):
        try:
            call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME, "file": "tiny-linux.qcow2",
                                             "format": "qcow2"}, status=201)
            call(url, "POST", "/v1/hosts", host_entry(remote, pool, remote_net), status=201)
            first = _create_on(url, "remote")  # includes copying the base image there
            times: dict[str, list[float]] = {"local": [], "remote": []}
            for _ in range(runs):
                for host in ("local", "remote"):
                    times[host].append(_create_on(url, host))
        finally:
            app.runner.shutdown()
            conn = remote.open()
            try:
                purge_domains(conn, [], app.installation_id)
                remove_pool(conn, pool)
            finally:
                conn.close()
            local = libvirt.open("qemu:///system")
            try:
                purge_domains(local, [], app.installation_id)
            finally:
                local.close()
    section = side_by_side(
        "Create to running on a host reached over TLS",
        "`POST /v1/vms` pinned to `local` (qemu:///system, shared storage) and to a second "
        "libvirtd in its own network namespace reached with `qemu+tls://` (storage `pool`: "
        f"volumes made and uploaded through libvirt), {runs} interleaved runs each, until the "
        "task succeeded; each VM deleted after.", "host", times, "TLS host / local")
    section.notes.append(f"The first create on the TLS host, which also copied the base image "
                         f"into its pool and checked its SHA-256: {ms(first)}.")
    return section


def _create_on(url: str, host: str) -> float:
    started = time.perf_counter()
    reply = call(url, "POST", "/v1/vms", {"name": f"b-{secrets.token_hex(4)}", "cpu": 1,
                                          "ram": 256, "image_name": TINY_IMAGE_NAME,
                                          "host": host}, status=202)
    wait_task(url, reply.body["task"]["id"])
    elapsed = time.perf_counter() - started
    wait_task(url, call(url, "DELETE", f"/v1/vms/{reply.body['id']}", status=202).body["id"])
    return elapsed
