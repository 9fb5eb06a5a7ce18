"""GET /metrics: Prometheus text exposition through prometheus-client, one registry per app."""
from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from src.services.actions.telemetry import Counts, Telemetry
from src.services.tasks.broker import queue_of

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0,
                   60.0)


class _StateCollector(Collector):
    """What the platform holds right now, read at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        counts = self._telemetry.counts()
        vms = GaugeMetricFamily("iaas_vms", "VMs by status", labels=["status"])
        for status, count in counts.vms.items():
            vms.add_metric([status], count)
        tasks = GaugeMetricFamily("iaas_tasks", "Tasks recorded, by action and result",
                                  labels=["action", "result"])
        for (action, status), count in counts.tasks.items():
            tasks.add_metric([action, status], count)
        gpus = GaugeMetricFamily("iaas_gpus", "GPUs in the inventory, by status", labels=["status"])
        for status, count in counts.gpus.items():
            gpus.add_metric([status], count)
        yield vms
        yield tasks
        yield gpus
        yield GaugeMetricFamily("iaas_libvirt_up", "1 while every host's libvirt answers",
                                value=1 if all(counts.hosts_up.values()) else 0)
        hosts = GaugeMetricFamily("iaas_host_up", "1 while the host's libvirt answers",
                                  labels=["host"])
        for name, up in counts.hosts_up.items():
            hosts.add_metric([name], 1 if up else 0)
        yield hosts
        yield from _task_metrics(counts)


def _task_metrics(counts: Counts) -> Iterable[Metric]:
    latency = HistogramMetricFamily(
        "iaas_task_latency_seconds", "Task latency: phase 'queued' from accepted to started, "
        "'running' from started to finished", labels=["phase", "action", "executor"])
    for (phase, action, executor), buckets in sorted(counts.latency.items()):
        latency.add_metric([phase, action, executor],
                           [("+Inf" if math.isinf(le) else str(le), count) for le, count, _ in buckets],
                           sum_value=buckets[-1][2])
    yield latency
    yield GaugeMetricFamily("iaas_outbox_unpublished",
                            "Accepted tasks not yet handed to the broker", value=counts.unpublished)
    if counts.queue_depths is None:
        return
    depths = GaugeMetricFamily("iaas_queue_depth", "Messages waiting in each host's queue",
                               labels=["host", "queue"])
    for host, depth in sorted(counts.queue_depths.items()):
        depths.add_metric([host, queue_of(host)], depth)
    yield depths


class Metrics:
    def __init__(self, telemetry: Telemetry) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("iaas_http_requests", "HTTP requests answered",
                                 ["method", "route", "status"], registry=self.registry)
        self._latency = Histogram("iaas_http_request_duration_seconds",
                                  "Time to answer HTTP requests", ["method", "route", "status"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._unauthorized = Counter("iaas_unauthorized_requests",
                                     "Requests refused for a missing or invalid token",
                                     ["route"], registry=self.registry)
        self.registry.register(_StateCollector(telemetry))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """route is the route's pattern (/v1/vms/{vm}), so labels stay few."""
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route, str(status)).observe(seconds)

    def unauthorized(self, route: str) -> None:
        self._unauthorized.labels(route).inc()

    def exposition(self) -> tuple[str, str]:
        """(text, content type) of every metric."""
        return generate_latest(self.registry).decode(), CONTENT_TYPE_LATEST
