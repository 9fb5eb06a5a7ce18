"""What every benchmark section shares: HTTP calls that must succeed, percentiles, live apps."""
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


@dataclass
class Section:
    """One part of BENCHMARKS.md: a heading, what was done, a table, and what it shows."""

    title: str
    method: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.method, "",
                 "| " + " | ".join(self.header) + " |",
                 "|" + "---|" * len(self.header)]
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
                 ratio_label: str, target: float | None = None) -> Section:
    """A section of two timed sides (median, p95 each) and the ratio of the second's median to
    the first's, judged against target when there is one."""
    section = Section(title=title, method=method, header=[header, "median", "p95"])
    for label, times in sides.items():
        section.rows.append([label, median_ms(times), ms(percentile(times, 95))])
    base, other = (statistics.median(times) for times in sides.values())
    ratio = other / base
    verdict = "" if target is None else (
        f", target <= {target}: {'met' if ratio <= target else 'NOT met'}")
    section.notes.append(f"ratio {ratio_label} (medians): **{ratio:.3f}**{verdict}")
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
    127.0.0.1."""
    app = wrap(create_app(config))
    try:
        live = LiveServer(app) if server == "wsgiref" else ProdServer(app)
        try:
            yield app, live.url
        finally:
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
