"""(c) GET /v1/vms latency and libvirt calls per request as the number of VMs grows."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from src.app import App

from .common import (
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


def settle(app: App, quiet_s: float = 1.0, limit_s: float = 300.0) -> None:
    """Wait until background work (post-build checks, sweeps) stops calling libvirt, so the
    per-request call count measures the request alone."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = app.hypervisor.calls
        time.sleep(quiet_s)
        if app.hypervisor.calls == before:
            return


def run(root: Path, counts: tuple[int, ...], requests: int) -> Section:
    section = Section(
        title="Listing VMs as their number grows",
        method=(f"`GET /v1/vms` over HTTP (wsgiref) on libvirt's test driver, {requests} requests "
                "after a warm-up at each size; VMs made through the API. The page size is "
                "1,000, so 5,000 VMs are listed as 5 pages; a row shows one page request."),
        header=["VMs", "median", "p95", "VMs per page", "libvirt calls per request"])
    every_call: set[int] = set()
    with live_app(test_driver_config(root)) as (app, url):
        register_base(url)
        made = 0
        for count in counts:
            create_vms(url, count - made, made)
            made = count
            settle(app)
            shown = len(call(url, "GET", "/v1/vms").body["vms"])
            for _ in range(max(5, requests // 10)):
                call(url, "GET", "/v1/vms")
            times, calls = [], set()
            for _ in range(requests):
                before = app.hypervisor.calls
                started = time.perf_counter()
                call(url, "GET", "/v1/vms")
                times.append(time.perf_counter() - started)
                calls.add(app.hypervisor.calls - before)
            section.rows.append([f"{count:,}", median_ms(times), ms(percentile(times, 95)),
                                 f"{shown:,}", ", ".join(map(str, sorted(calls)))])
            every_call.update(calls)
            if count == counts[-1]:
                per_vm = statistics.median(times) / shown * 1e6
                section.notes.append(f"At {count:,} VMs a page costs about {per_vm:.0f} µs per "
                                     "VM listed.")
    section.notes.append(
        f"libvirt calls per list request at every size: {sorted(every_call)}"
        + (" (one bulk call, whatever the number of VMs)." if every_call == {1} else
           " (the count includes any background work that ran during a request)."))
    return section
