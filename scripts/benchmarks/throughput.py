"""(d) How many VMs per minute reach running when creates come in parallel."""
from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from src.config import Config
from tests.e2e.host import SYSTEM_URI, TINY_IMAGE_NAME, IsolatedNetwork, purge_domains

from .common import Section, call, live_app, wait_task


def _create(url: str) -> str:
    body = {"name": f"bench-tp-{secrets.token_hex(4)}", "cpu": 1, "ram": 128,
            "image_name": TINY_IMAGE_NAME}
    reply = call(url, "POST", "/v1/vms", body, status=202)
    wait_task(url, reply.body["task"]["id"])
    return str(reply.body["id"])


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
        header=["concurrency", "wall time", "VMs per minute"])
    with live_app(config) as (app, url):
        try:
            call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME,
                                             "file": "tiny-linux.qcow2", "format": "qcow2"},
                 status=201)
            for level in levels:
                started = time.perf_counter()
                with ThreadPoolExecutor(level) as pool:
                    ids = list(pool.map(lambda _: _create(url), range(per_level)))
                wall = time.perf_counter() - started
                section.rows.append([str(level), f"{wall:.2f} s", f"{per_level / wall * 60:.0f}"])
                for vm_id in ids:
                    wait_task(url, call(url, "DELETE", f"/v1/vms/{vm_id}", status=202).body["id"])
        finally:
            app.runner.shutdown()
            with app.db.read() as db:
                every = [row[0] for row in db.execute("SELECT vm_id FROM tasks")]
            purge_domains(conn, every, app.installation_id)
    rates = {int(row[0]): float(row[2]) for row in section.rows}
    first = min(rates)
    for level in sorted(rates)[1:]:
        section.notes.append(f"concurrency {level}: {rates[level] / rates[first]:.1f}x the VMs per "
                             f"minute of concurrency {first}, on this 2-CPU host under TCG.")
    return section
