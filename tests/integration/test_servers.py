"""Both servers (wsgiref for `make serve`, waitress for `make serve-prod`) under slow clients and
load, on 127.0.0.1 only. Deadlines here are generous: the measured figures go to BENCHMARKS.md."""
from __future__ import annotations

import http.client
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from src.app import App
from src.config import Config
from tests.support import Client

SLOW_CLIENTS = 50
REQUESTS, CONCURRENCY, VMS = 2000, 50, 100
ANSWER_DEADLINE_S = 5.0


@pytest.fixture
def config(config: Config) -> Config:
    # 100 VMs on the 16-CPU test host; the load comes from one address, CONCURRENCY at once.
    return replace(config, cpu_allocation_ratio=64.0, max_connections_per_address=64)


def timed_get(url: str, token: str, source: str = "127.0.0.1") -> tuple[int, float]:
    """(status, seconds) of a GET sent from the loopback address source."""
    host, _, port = url.removeprefix("http://").partition("/")[0].partition(":")
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=30,
                                            source_address=(source, 0))
    try:
        connection.request("GET", "/" + url.removeprefix("http://").partition("/")[2],
                           headers={"Authorization": f"Bearer {token}"})
        answer = connection.getresponse()
        answer.read()
        return answer.status, time.perf_counter() - started
    finally:
        connection.close()


def test_stalled_half_requests_do_not_block_others(server: Any) -> None:
    stalled = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"na")
            stalled.append(sock)
        # From another address: those 50 are past 127.0.0.1's share of connections.
        status, seconds = timed_get(server.url + "/v1/vms", server.token, "127.0.0.2")
        print(f"GET /v1/vms beside {SLOW_CLIENTS} stalled clients: {seconds * 1000:.1f} ms")
        assert status == 200 and seconds < ANSWER_DEADLINE_S
    finally:
        for sock in stalled:
            sock.close()


def test_two_thousand_lists_at_concurrency_fifty(app: App, server: Any, base_image: dict) -> None:
    client = Client(app)
    for index in range(VMS):
        assert client.post("/v1/vms", {"name": f"load-{index}", "cpu": 1, "ram": 128,
                                        "image_name": "base"}).status == 202
    url = server.url + "/v1/vms"
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda _: timed_get(url, server.token), range(REQUESTS)))
    statuses = [status for status, _ in results]
    latencies = sorted(seconds for _, seconds in results)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"{REQUESTS} x GET /v1/vms ({VMS} VMs) at concurrency {CONCURRENCY}: "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert statuses == [200] * REQUESTS
