"""What every benchmark section shares: targets and verdicts, HTTP calls that must succeed,
percentiles, live apps."""
from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.harness.servers import LiveServer, ProdServer, Reply, fetch, host_xml
from src.app import App, create_app
from src.config import Config
from src.hypervisor.nwfilter_xml import AllowRule, FilterSpec
from src.servers.heap import settle, unsettle


@dataclass(frozen=True)
class Target:
    """A goal as its issue set it: the figure at most limit (at least, with at_least)."""

    what: str  # the figure judged, e.g. "API / raw (medians)"
    limit: float
    issue: str  # where it was set: the goal stays as set there, met or not
    at_least: bool = False
    unit: str = ""

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def text(self) -> str:
        return f"{self.what} {'≥' if self.at_least else '≤'} {self.limit:g}{self.unit} ({self.issue})"


# Every target a section is judged against, as the issues set them (a figure that misses says
# "NOT met"; the goal is never moved to the figure).
TARGETS = {
    "create": Target("API / raw libvirt (medians)", 1.05, "issue 21"),
    "broker_create": Target("broker / in-process (medians)", 1.10, "Phase 2"),
    "broker_scale": Target("4 worker processes / 1 process", 1.5, "issue 21", at_least=True),
    "broker_inprocess": Target("4 worker processes / in-process", 1.0, "issue 21",
                               at_least=True),
    "hosts_create": Target("create median at 1,000 hosts", 30, "issue 21", unit=" ms"),
    "list_1000": Target("median at 1,000 VMs, on a quiet machine", 25, "issue 21", unit=" ms"),
    "list_hosts": Target("4 hosts / 1 host (medians)", 1.3, "issue 21"),
    "history": Target("1,000,000 finished tasks / none (medians)", 1.2, "issue 21"),
    "slow_clients": Target("slowest request beside stalled clients", 100, "Phase 1",
                           unit=" ms"),
    "volume_create": Target("API / qemu-img convert (medians)", 1.2, "issue 22"),
    "queue_placement": Target("a placement from a queue of 1,000 over 100 hosts", 20,
                              "issue 23", unit=" ms"),
    "booking": Target("a booking decision beside 10,000 reservations", 20, "issue 23",
                      unit=" ms"),
    "volume_snapshot": Target("API / qemu-img snapshot (medians)", 1.2, "issue 22"),
    "migration": Target("live migration API / virsh migrate by hand (medians)", 1.2,
                        "issue 24"),
}


@dataclass
class Section:
    """One part of BENCHMARKS.md: a heading, what was done, each target with its figure and
    verdict, a table, and what it shows."""

    title: str
    method: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdicts: list[list[str]] = field(default_factory=list)  # target, figure, verdict
    stamp: str = ""  # when and under what load it was measured (bench.py sets it)

    def judge(self, target: Target, value: float, figure: str | None = None) -> bool:
        """Record value against target (figure: how to show it); whether it is met."""
        met = target.met(value)
        self.verdicts.append([target.text(), figure or f"{value:.3g}{target.unit}",
                              "met" if met else "**NOT met**"])
        return met

    def summary(self) -> list[str]:
        """A line per target: what bench.py prints beside the figure."""
        return [f"{self.title}: {figure}, target {target}: {verdict.strip('*')}"
                for target, figure, verdict in self.verdicts]

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.stamp:
            lines += [f"*{self.stamp}*", ""]
        lines += [self.method, ""]
        if self.verdicts:
            lines += ["| target | figure | verdict |", "|---|---|---|"]
            lines += ["| " + " | ".join(row) + " |" for row in self.verdicts]
        else:
            lines += ["No target was set for this section."]
        lines += ["", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def median_ms(values: list[float]) -> str:
    return ms(statistics.median(values))


def side_by_side(title: str, method: str, header: str, sides: dict[str, list[float]],
                 ratio_label: str, target: Target | None = None) -> Section:
    """A section of two timed sides (median, p95 each) and the ratio of the second's median to
    the first's, judged against target when there is one."""
    section = Section(title=title, method=method, header=[header, "median", "p95"])
    for label, times in sides.items():
        section.rows.append([label, median_ms(times), ms(percentile(times, 95))])
    base, other = (statistics.median(times) for times in sides.values())
    ratio = other / base
    if target is not None:
        section.judge(target, ratio, f"{ratio:.3f}")
    section.notes.append(f"ratio {ratio_label} (medians): **{ratio:.3f}**")
    return section


def call(base_url: str, method: str, path: str, body: Any = None, *, status: int = 200) -> Reply:
    """One HTTP call that must answer with status. Raises: RuntimeError otherwise."""
    reply = fetch(base_url, method, path, body)
    if reply.status != status:
        raise RuntimeError(f"{method} {path} -> {reply.status}: {reply.body}")
    return reply


def wait_task(base_url: str, task_id: str) -> None:
    """Long-poll until the task succeeds. Raises: RuntimeError if it fails."""
    while True:
        reply = call(base_url, "GET", f"/v1/tasks/{task_id}?wait=60")
        task = reply.body
        if task["status"] == "succeeded":
            return
        if task["status"] == "failed":
            raise RuntimeError(f"task {task_id} failed: {task['error']}")
        time.sleep(float(reply.headers.get("Retry-After", 0)))  # the server declined to wait


@contextmanager
def live_app(config: Config, server: str = "wsgiref",
             wrap: Callable[[App], App] = lambda app: app) -> Iterator[tuple[App, str]]:
    """wrap(create_app(config)) behind wsgiref (make serve) or waitress (make serve-prod) on
    127.0.0.1, with the collector settled as `python -m src.serve` settles it."""
    app = wrap(create_app(config))
    try:
        live = LiveServer(app) if server == "wsgiref" else ProdServer(app)
        settle()
        try:
            yield app, live.url
        finally:
            unsettle()
            live.stop()
    finally:
        app.close()


def test_driver_config(root: Path, network: str = "iaas-bench") -> Config:
    """An app config on libvirt's test driver, on a host big enough never to limit capacity."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "host.xml").write_text(host_xml(network, cpus=1024, memory_gib=4096))
    (root / "images").mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root / "images" / "base.qcow2"),
                    "64M"], check=True)
    return Config(db_path=root / "iaas.db", libvirt_uri=f"test://{root}/host.xml",
                  domain_type="test", images_dir=root / "images", instances_dir=root / "instances",
                  network=network, max_builds=32, cpu_allocation_ratio=64.0,
                  disk_allocation_ratio=64.0, allow_test_hosts=True)


def register_base(url: str) -> None:
    call(url, "POST", "/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"},
         status=201)


def create_vms(url: str, count: int, start: int = 0) -> None:
    """count VMs on the test driver through the API, then wait for every build."""
    tasks = [call(url, "POST", "/v1/vms", {"name": f"vm-{start + i:05d}", "cpu": 1, "ram": 128,
                                           "image_name": "base"}, status=202).body["task"]["id"]
             for i in range(count)]
    for task_id in tasks:
        wait_task(url, task_id)


def default_group_filter(vm_id: str) -> FilterSpec:
    """The nwfilter the API gives a VM alone in its project's default security group (SSH from
    anywhere): what a by-hand side defines to do the same steps."""
    return FilterSpec(vm_id, (AllowRule("tcp", None, 0, port_min=22, port_max=22),))
