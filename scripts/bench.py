#!/usr/bin/env python3
"""Benchmark: API create vs raw libvirt on qemu:///system; GET /v1/vms on the test driver."""
from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libvirt  # type: ignore[import-untyped]

from src.app import App, create_app
from src.config import Config
from src.services.provisioning import GIB
from src.utils.domain_xml import DomainSpec, render_domain
from tests.e2e.host import (
    SYSTEM_URI,
    TINY_IMAGE_NAME,
    HostUnavailable,
    IsolatedNetwork,
    make_workspace,
    open_system,
    purge_domains,
    remove_network,
    start_isolated_network,
)
from tests.e2e.http_client import fetch
from tests.support import LiveServer, Reply, check_contract, host_xml

CREATE_RATIO_TARGET = 1.15
LIST_MEDIAN_TARGET_MS = 25.0
RAW_INSTALLATION = "bench-raw-" + secrets.token_hex(4)  # tags raw domains so cleanup finds them


@dataclass(frozen=True)
class Sizes:
    runs: int
    small: int
    large: int
    requests: int
    warmup: int


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def call(base_url: str, method: str, path: str, body: Any = None, *, status: int = 200) -> Reply:
    """One HTTP call that must answer with status. Raises: RuntimeError otherwise."""
    reply = fetch(base_url, method, path, body)
    if reply.status != status:
        raise RuntimeError(f"{method} {path} -> {reply.status}: {reply.body}")
    return reply


def wait_task(base_url: str, task_id: str) -> None:
    """Long-poll until the task succeeds. Raises: RuntimeError if it fails."""
    while True:
        task = call(base_url, "GET", f"/v1/tasks/{task_id}?wait=60").body
        if task["status"] == "succeeded":
            return
        if task["status"] == "failed":
            raise RuntimeError(f"task {task_id} failed: {task['error']}")


@contextmanager
def live_app(config: Config) -> Iterator[tuple[App, str]]:
    """create_app(config) behind the real threaded server on 127.0.0.1."""
    app = create_app(config)
    try:
        server = LiveServer(app)
        try:
            yield app, server.url
        finally:
            server.stop()
    finally:
        app.close()


# --- (a) create: API vs raw libvirt on qemu:///system ---------------------------------------

def api_create(base_url: str) -> float:
    """Seconds from POST /v1/vms to its task succeeded; the VM is deleted afterwards (untimed)."""
    body = {"name": f"bench-api-{secrets.token_hex(4)}", "cpu": 1, "ram": 256,
            "image_name": TINY_IMAGE_NAME}
    started = time.perf_counter()
    reply = call(base_url, "POST", "/v1/vms", body, status=202)
    wait_task(base_url, reply.body["task"]["id"])
    elapsed = time.perf_counter() - started
    deleting = call(base_url, "DELETE", f"/v1/vms/{reply.body['id']}", status=202)
    wait_task(base_url, deleting.body["id"])
    return elapsed


def raw_create(conn: libvirt.virConnect, base: Path, workdir: Path, network: str) -> float:
    """Seconds for the same steps straight on libvirt: overlay, define (validated), start,
    autostart on."""
    vm_id = str(uuid.uuid4())
    folder = workdir / vm_id
    spec = DomainSpec(uuid=vm_id, name=f"bench-raw-{secrets.token_hex(4)}", domain_type="qemu",
                      cpu=1, ram_mib=256, disk_path=str(folder / "disk.qcow2"),
                      disk_format="qcow2", network=network,
                      console_log=str(folder / "console.log"),
                      installation_id=RAW_INSTALLATION, image_name=TINY_IMAGE_NAME,
                      mac="52:54:00:" + ":".join(secrets.token_hex(1) for _ in range(3)))
    started = time.perf_counter()
    folder.mkdir(mode=0o755)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    spec.disk_path, str(GIB)], check=True)
    domain = conn.defineXMLFlags(render_domain(spec), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        domain.create()
        domain.setAutostart(1)
        elapsed = time.perf_counter() - started
    finally:
        if domain.isActive():
            domain.destroy()
        domain.undefine()
        shutil.rmtree(folder)
    return elapsed


def interleave(runs: int, api: Callable[[], float], raw: Callable[[], float]) -> tuple[
        list[float], list[float]]:
    """A,B,A,B...: one warm-up pair first (not counted), so noise hits both sides alike."""
    api()
    raw()
    api_times, raw_times = [], []
    for _ in range(runs):
        api_times.append(api())
        raw_times.append(raw())
    return api_times, raw_times


def report_create(net: IsolatedNetwork, api_times: list[float], raw_times: list[float]) -> None:
    ratio = statistics.median(api_times) / statistics.median(raw_times)
    print(f"[a] create on {SYSTEM_URI} (domain type qemu/TCG, tiny image, isolated network "
          f"{net.name}), {len(api_times)} interleaved runs each after one warm-up pair")
    print(f"    {'':34}{'median':>11}{'p95':>11}")
    for label, times in (("API  POST /v1/vms -> task succeeded", api_times),
                         ("raw  qemu-img + defineXML + create", raw_times)):
        print(f"    {label:34}{ms(statistics.median(times))} {ms(percentile(times, 95))}")
    verdict = "MET" if ratio <= CREATE_RATIO_TARGET else "NOT MET"
    print(f"    ratio API/raw (median): {ratio:.3f}  target <= {CREATE_RATIO_TARGET}: {verdict}"
          f"  [{'PASS' if verdict == 'MET' else 'MISS'}]")


def run_create_pairs(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork,
                     runs: int) -> tuple[list[float], list[float]]:
    """The interleaved runs against an app whose domains are purged even when a run fails."""
    config = Config(db_path=root / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                    images_dir=root / "images", instances_dir=root / "instances",
                    network=net.name, max_builds=2)
    base = config.images_dir / "tiny-linux.qcow2"
    (root / "raw").mkdir(mode=0o755)
    with live_app(config) as (app, url):
        try:
            check_contract("POST", "/v1/images", call(url, "POST", "/v1/images", {
                "name": TINY_IMAGE_NAME, "file": base.name, "format": "qcow2"}, status=201))
            return interleave(runs, lambda: api_create(url),
                              lambda: raw_create(conn, base, root / "raw", net.name))
        finally:
            app.runner.shutdown()  # no build may define a domain after the purge
            with app.db.read() as db:
                ids = [row[0] for row in db.execute("SELECT vm_id FROM tasks")]
            purge_domains(conn, ids, app.installation_id)


def bench_create(runs: int) -> None:
    conn = open_system()
    net = start_isolated_network(conn, "iaas-bench")
    try:
        root = make_workspace("iaas-bench-")
        try:
            api_times, raw_times = run_create_pairs(conn, root, net, runs)
        finally:
            purge_domains(conn, [], RAW_INSTALLATION)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        remove_network(conn, net)
        conn.close()
    report_create(net, api_times, raw_times)


# --- (b) GET /v1/vms on the test driver -------------------------------------------------------

def create_vms(url: str, count: int, start: int) -> None:
    """count VMs through the API, then wait for every build."""
    tasks = [call(url, "POST", "/v1/vms", {"name": f"vm-{start + i:05d}", "cpu": 1, "ram": 128,
                                           "image_name": "base"}, status=202).body["task"]["id"]
             for i in range(count)]
    for task_id in tasks:
        wait_task(url, task_id)


def measure_list(app: App, url: str, sizes: Sizes, expected: int) -> tuple[list[float], set[int]]:
    """Latencies of GET /v1/vms and the set of libvirt-call deltas seen per request."""
    first = call(url, "GET", "/v1/vms")
    check_contract("GET", "/v1/vms", first)
    if len(first.body["vms"]) != expected:
        raise RuntimeError(f"GET /v1/vms gave {len(first.body['vms'])} VMs, not {expected}")
    for _ in range(sizes.warmup):
        call(url, "GET", "/v1/vms")
    times, deltas = [], set()
    for _ in range(sizes.requests):
        before = app.hypervisor.calls
        started = time.perf_counter()
        call(url, "GET", "/v1/vms")
        times.append(time.perf_counter() - started)
        deltas.add(app.hypervisor.calls - before)
    return times, deltas


def report_list(sizes: Sizes, results: dict[int, tuple[list[float], set[int]]]) -> None:
    print(f"[b] GET /v1/vms over HTTP on the libvirt test driver, {sizes.requests} requests "
          f"after {sizes.warmup} warm-up")
    print(f"    {'VMs':>6}{'median':>11}{'p95':>11}   libvirt calls/request")
    for count, (times, deltas) in results.items():
        print(f"    {count:>6}{ms(statistics.median(times))} {ms(percentile(times, 95))}   "
              f"{', '.join(map(str, sorted(deltas)))}")
    large_times, _ = results[sizes.large]
    median_ms = statistics.median(large_times) * 1000
    print(f"    median at {sizes.large} VMs {median_ms:.1f} ms < {LIST_MEDIAN_TARGET_MS:.0f} ms: "
          f"{'PASS' if median_ms < LIST_MEDIAN_TARGET_MS else 'MISS'}")
    all_deltas = set().union(*(deltas for _, deltas in results.values()))
    print(f"    libvirt calls per request constant ({sorted(all_deltas)}): "
          f"{'PASS' if len(all_deltas) == 1 else 'MISS'}")


def bench_list(sizes: Sizes) -> None:
    with tempfile.TemporaryDirectory(prefix="iaas-bench-") as tmp:
        root = Path(tmp)
        host = root / "host.xml"
        # Big enough that capacity never limits the listing benchmark.
        host.write_text(host_xml("iaas-bench", cpus=1024, memory_gib=4096))
        config = Config(db_path=root / "iaas.db", libvirt_uri=f"test://{host}",
                        domain_type="test", images_dir=root / "images",
                        instances_dir=root / "instances", network="iaas-bench", max_builds=32)
        config.images_dir.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        str(config.images_dir / "base.qcow2"), "64M"], check=True)
        with live_app(config) as (app, url):
            call(url, "POST", "/v1/images", {"name": "base", "file": "base.qcow2",
                                             "format": "qcow2"}, status=201)
            results = {}
            made = 0
            for count in (sizes.small, sizes.large):
                create_vms(url, count - made, made)
                made = count
                results[count] = measure_list(app, url, sizes, count)
        report_list(sizes, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=None,
                        help="create runs per side (default 10, 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes: 3 create runs, 200 VMs, 50 list requests")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 10)
    sizes = (Sizes(runs=runs, small=10, large=200, requests=50, warmup=5) if args.quick else
             Sizes(runs=runs, small=10, large=1000, requests=200, warmup=20))
    print(f"IaaS benchmark ({'quick' if args.quick else 'full'})\n")
    started = time.monotonic()
    try:
        bench_create(sizes.runs)
        print()
        bench_list(sizes)
    except HostUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
