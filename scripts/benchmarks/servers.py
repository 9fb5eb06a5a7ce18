"""(e) make serve (wsgiref) against make serve-prod (waitress): throughput, slow clients, load."""
from __future__ import annotations

import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.harness.servers import SERVER_TOKENS

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

SERVERS = ("wsgiref", "waitress")
VMS = 100
SLOW_CLIENTS = 50
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, token: str) -> tuple[bool, float]:
    started = time.perf_counter()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with _OPENER.open(request, timeout=60) as answer:
            answer.read()
            ok = answer.status == 200
    except OSError:
        ok = False
    return ok, time.perf_counter() - started


def _burst(url: str, token: str, requests: int, concurrency: int) -> tuple[int, list[float], float]:
    """(failures, latencies, requests per second) of requests GETs at concurrency."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: _get(url, token), range(requests)))
    wall = time.perf_counter() - started
    return sum(1 for ok, _ in results if not ok), [s for _, s in results], requests / wall


def _beside_stalled(base: str, port: int, token: str, samples: int) -> list[float]:
    """GET /v1/vms latencies while SLOW_CLIENTS connections hold half-sent requests."""
    stalled = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"na")
            stalled.append(sock)
        return [_get(base + "/v1/vms", token)[1] for _ in range(samples)]
    finally:
        for sock in stalled:
            sock.close()


def run(root: Path, requests: int, load_requests: int) -> list[Section]:
    rps = Section(
        title="Requests per second: make serve against make serve-prod",
        method=(f"The same app on the test driver with {VMS} VMs, {requests} requests at "
                "concurrency 16 per row, over HTTP on 127.0.0.1. wsgiref: a thread per "
                "connection. waitress: 16 worker threads behind its I/O loop."),
        header=["server", "show `GET /v1/vms/{id}`", "list `GET /v1/vms`"])
    slow = Section(
        title="Slow clients",
        method=(f"{SLOW_CLIENTS} connections each send half a request and stall; meanwhile 20 "
                "normal `GET /v1/vms` are timed one after another."),
        header=["server", "median", "max"])
    load = Section(
        title="Load",
        method=(f"{load_requests:,} `GET /v1/vms` with {VMS} VMs at concurrency 50 (test driver)."),
        header=["server", "failures", "p50", "p99", "requests/s"])
    for kind in SERVERS:
        with live_app(test_driver_config(root / kind), kind) as (_app, url):
            token = SERVER_TOKENS[url]
            register_base(url)
            create_vms(url, VMS)
            vm_id = call(url, "GET", "/v1/vms?limit=1").body["vms"][0]["id"]
            _burst(url + "/v1/vms", token, 50, 16)  # warm-up
            _, _, show_rps = _burst(f"{url}/v1/vms/{vm_id}", token, requests, 16)
            _, _, list_rps = _burst(url + "/v1/vms", token, requests, 16)
            rps.rows.append([kind, f"{show_rps:.0f}", f"{list_rps:.0f}"])
            port = int(url.rsplit(":", 1)[1])
            beside = _beside_stalled(url, port, token, 20)
            slow.rows.append([kind, median_ms(beside), ms(max(beside))])
            slow.judge(TARGETS["slow_clients"], max(beside) * 1000,
                       f"{kind}: {ms(max(beside))}")
            failures, latencies, load_rps = _burst(url + "/v1/vms", token, load_requests, 50)
            load.rows.append([kind, str(failures), ms(percentile(latencies, 50)),
                              ms(percentile(latencies, 99)), f"{load_rps:.0f}"])
    return [rps, slow, load]
