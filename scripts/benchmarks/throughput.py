"""(d) How many VMs per minute reach running when creates come in parallel."""
from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import (
    SYSTEM_URI,
    TINY_IMAGE_NAME,
    IsolatedNetwork,
    purge_domains,
)
from src.config import Config

from .common import Section, call, live_app, wait_task


def _create(url: str) -> tuple[str, str | None]:
    """(VM id, None) once it runs, or (VM id, error code) when its build failed."""
    body = {"name": f"bench-tp-{secrets.token_hex(4)}", "cpu": 1, "ram": 128,
            "image_name": TINY_IMAGE_NAME}
    reply = call(url, "POST", "/v1/vms", body, status=202)
    task = reply.body["task"]
    while task["status"] not in ("succeeded", "failed"):
        polled = call(url, "GET", f"/v1/tasks/{task['id']}?wait=60")
        task = polled.body
        time.sleep(float(polled.headers.get("Retry-After", 0)))  # the server declined to wait
    return str(reply.body["id"]), task["error"]["code"] if task["error"] else None


def run(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork, levels: tuple[int, ...],
        per_level: int) -> Section:
    config = Config(db_path=root / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                    images_dir=root / "images", instances_dir=root / "instances",
                    network=net.name, max_builds=max(levels))
    section = Section(
        title="Concurrent creates",
        method=(f"`{SYSTEM_URI}`, TCG, the tiny image: {per_level} VMs per level, created by that "
                "many parallel clients, each `POST /v1/vms` then waiting for its task; wall "
                f"time from the first POST to the last `running`. `IAAS_MAX_BUILDS={max(levels)}`."
                " The VMs are deleted between levels (not timed)."),
        header=["concurrency", "wall time", "VMs per minute", "failed builds"])
    with live_app(config) as (app, url):
        try:
            call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME,
                                             "file": "tiny-linux.qcow2", "format": "qcow2"},
                 status=201)
            for level in levels:
                started = time.perf_counter()
                with ThreadPoolExecutor(level) as pool:
                    outcomes = list(pool.map(lambda _: _create(url), range(per_level)))
                wall = time.perf_counter() - started
                failed = [code for _, code in outcomes if code]
                running = per_level - len(failed)
                section.rows.append([str(level), f"{wall:.2f} s", f"{running / wall * 60:.0f}",
                                     ", ".join(failed) or "0"])
                for vm_id, _ in outcomes:
                    wait_task(url, call(url, "DELETE", f"/v1/vms/{vm_id}", status=202).body["id"])
        finally:
            app.runner.shutdown()
            with app.db.read() as db:
                every = [row[0] for row in db.execute("SELECT vm_id FROM tasks")]
            purge_domains(conn, every, app.installation_id)
    rates = {int(row[0]): float(row[2]) for row in section.rows}
    first = min(rates)
    if any(row[3] != "0" for row in section.rows):
        section.notes.append("Failed builds are not counted as VMs reaching running; the column "
                             "lists their error codes (each one was rolled back).")
    for level in sorted(rates)[1:] if rates[first] else []:
        section.notes.append(f"concurrency {level}: {rates[level] / rates[first]:.1f}x the VMs per "
                             f"minute of concurrency {first}, on this 2-CPU host under TCG.")
    return section
