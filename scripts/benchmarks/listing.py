"""(c) GET /v1/vms latency and libvirt calls per request as the number of VMs grows, with the
reconciler sweeping every second meanwhile."""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from src.api.pipeline import StartResponse
from src.app import App
from src.services.actions.reconcile import SWEEP_CALLS_BOUND
from src.services.vms.addresses import LEASE_CALLS
from src.services.vms.agent_asks import ASKS_PER_SWEEP

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

SWEEP_INTERVAL_S = 1.0  # IAAS_RECONCILE_INTERVAL while listing: the sweep runs all along
MIN_SWEEPS = 2


@dataclass
class CountingApp(App):
    """The app, noting the libvirt calls each request made on its own thread: the request's
    own, told apart from the calls the reconciler and the task runner make meanwhile."""

    own_calls: list[int] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        before = self.hypervisor.thread_calls
        try:
            return list(super().__call__(environ, start_response))
        finally:
            self.own_calls.append(self.hypervisor.thread_calls - before)


def counting(app: App) -> CountingApp:
    return CountingApp(**{spec.name: getattr(app, spec.name) for spec in fields(App)})


@dataclass
class Window:
    """The sweeps that ended while a size was measured, and their libvirt calls."""

    sweeps: int
    sweep_calls: int

    def per_sweep(self) -> str:
        if not self.sweeps:
            return "no sweep"
        return f"{self.sweep_calls / self.sweeps:.0f} ({self.sweeps} sweeps)"


def measure(app: CountingApp, url: str, requests: int) -> tuple[list[float], Window]:
    """Time `requests` list requests, more if fewer than MIN_SWEEPS sweeps ended meanwhile."""
    app.own_calls.clear()
    sweeps, sweep_calls = app.reconciler.sweeps, app.reconciler.sweep_calls
    times: list[float] = []
    while len(times) < requests or app.reconciler.sweeps - sweeps < MIN_SWEEPS:
        started = time.perf_counter()
        call(url, "GET", "/v1/vms")
        times.append(time.perf_counter() - started)
    return times, Window(app.reconciler.sweeps - sweeps, app.reconciler.sweep_calls - sweep_calls)


def run(root: Path, counts: tuple[int, ...], requests: int) -> Section:
    section = Section(
        title="Listing VMs as their number grows",
        method=(f"`GET /v1/vms` over HTTP (wsgiref) on libvirt's test driver, {requests} requests "
                f"(more until {MIN_SWEEPS} sweeps ran) after a warm-up at each size; VMs made "
                "through the API. The reconciler sweeps every "
                f"{SWEEP_INTERVAL_S:.0f} s all along (`IAAS_RECONCILE_INTERVAL`), so requests "
                "share the process with it. The page size is 1,000, so 5,000 VMs are "
                "listed as 5 pages; a row shows one page request. A request's own libvirt "
                "calls are counted on its thread; the sweeps' calls are counted apart."),
        header=["VMs", "median", "p95", "VMs per page", "libvirt calls per request",
                "background libvirt calls per sweep"])
    own: set[int] = set()
    config = replace(test_driver_config(root), reconcile_interval_s=SWEEP_INTERVAL_S)
    with live_app(config, wrap=counting) as (app, url):
        assert isinstance(app, CountingApp)
        register_base(url)
        made = 0
        for count in counts:
            create_vms(url, count - made, made)
            made = count
            shown = len(call(url, "GET", "/v1/vms").body["vms"])
            for _ in range(max(5, requests // 10)):
                call(url, "GET", "/v1/vms")
            times, window = measure(app, url, requests)
            section.rows.append([f"{count:,}", median_ms(times), ms(percentile(times, 95)),
                                 f"{shown:,}", ", ".join(map(str, sorted(set(app.own_calls)))),
                                 window.per_sweep()])
            own.update(app.own_calls)
            if count == 1000:
                median = statistics.median(times) * 1000
                section.judge(TARGETS["list_1000"], median, f"{median:.1f} ms")
            if count == counts[-1]:
                per_vm = statistics.median(times) / shown * 1e6
                section.notes.append(f"At {count:,} VMs a page costs about {per_vm:.0f} µs per "
                                     "VM listed.")
    section.notes.append(
        f"libvirt calls per list request at every size: {sorted(own)}"
        + (" (one bulk call, whatever the number of VMs)." if own == {1} else "."))
    section.notes.append(
        f"A sweep makes at most {SWEEP_CALLS_BOUND} libvirt calls whatever the number of VMs: "
        f"one bulk power-state call, {LEASE_CALLS} for the DHCP leases, one for the host's size, "
        f"one for its PCI devices, and up to "
        f"{ASKS_PER_SWEEP} guest agent questions of 2 calls each (VMs without an address first, "
        "each VM asked again with backoff); the neighbour table is read from /proc/net/arp. "
        f"The test driver's agents answer at once, so sweeps ask {ASKS_PER_SWEEP} VMs at a time "
        "until every VM has an address, then only refresh them.")
    return section
