"""(a) Create-to-running through the API against raw libvirt doing the same steps."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import (
    SYSTEM_URI,
    TINY_IMAGE_NAME,
    IsolatedNetwork,
    purge_domains,
)
from src.config import Config
from src.hypervisor.domain_xml import DomainSpec, NicSpec, domain_name, render_domain
from src.hypervisor.nwfilter_xml import render_filter
from src.services.vms.provisioning import GIB
from src.utils.nocloud import Seed, write_seed

from .common import (
    TARGETS,
    Section,
    call,
    default_group_filter,
    live_app,
    side_by_side,
    wait_task,
)

RAW_INSTALLATION = "bench-raw-" + secrets.token_hex(4)  # tags raw domains so cleanup finds them


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
    """The same steps straight on libvirt: overlay, seed, the VM's nwfilter (what the API's
    default security group gives a VM alone in it: SSH from anywhere), define (validated),
    start, autostart."""
    vm_id = str(uuid.uuid4())
    folder = workdir / vm_id
    mac = "52:54:00:" + ":".join(secrets.token_hex(1) for _ in range(3))
    firewall = default_group_filter(vm_id)
    spec = DomainSpec(uuid=vm_id, name=domain_name(vm_id),
                      title=f"bench-raw-{secrets.token_hex(4)}", domain_type="qemu",
                      cpu=1, ram_mib=256, disk_path=str(folder / "disk.qcow2"),
                      disk_format="qcow2", nics=(NicSpec(network, mac),),
                      console_log=str(folder / "console.log"),
                      installation_id=RAW_INSTALLATION, image_name=TINY_IMAGE_NAME,
                      seed_path=str(folder / "seed.iso"), nwfilter=firewall.name)
    started = time.perf_counter()
    folder.mkdir(mode=0o755)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    spec.disk_path, str(GIB)], check=True)
    write_seed(Seed(instance_id=vm_id, hostname=spec.title, ssh_keys=(), user_data=None, mac=mac),
               folder / "seed.iso")
    nwfilter = conn.nwfilterDefineXML(render_filter(firewall))
    try:
        domain = conn.defineXMLFlags(render_domain(spec), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            domain.create()
            domain.setAutostart(1)
            elapsed = time.perf_counter() - started
        finally:
            if domain.isActive():
                domain.destroy()
            domain.undefine()
    finally:
        nwfilter.undefine()
        shutil.rmtree(folder)
    return elapsed


def interleave(runs: int, api: Callable[[], float],
               raw: Callable[[], float]) -> tuple[list[float], list[float]]:
    """A,B,A,B...: one warm-up pair first (not counted), so noise hits both sides alike."""
    api()
    raw()
    api_times, raw_times = [], []
    for _ in range(runs):
        api_times.append(api())
        raw_times.append(raw())
    return api_times, raw_times


def run(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork, runs: int) -> Section:
    config = Config(db_path=root / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                    images_dir=root / "images", instances_dir=root / "instances",
                    network=net.name, max_builds=2)
    base = config.images_dir / "tiny-linux.qcow2"
    (root / "raw").mkdir(mode=0o755)
    try:
        with live_app(config) as (app, url):
            try:
                call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME, "file": base.name,
                                                 "format": "qcow2"}, status=201)
                api_times, raw_times = interleave(
                    runs, lambda: api_create(url),
                    lambda: raw_create(conn, base, root / "raw", net.name))
            finally:
                app.runner.shutdown()  # no build may define a domain after the purge
                with app.db.read() as db:
                    ids = [row[0] for row in db.execute("SELECT vm_id FROM tasks")]
                purge_domains(conn, ids, app.installation_id)
    finally:
        purge_domains(conn, [], RAW_INSTALLATION)
    return side_by_side(
        "Create to running: API against raw libvirt",
        f"`{SYSTEM_URI}`, TCG, the tiny image, an isolated network; {runs} interleaved runs per "
        "side after one warm-up pair. API: `POST /v1/vms` until its task succeeded (HTTP, auth, "
        "DB, capacity and quota checks, seed, overlay, the VM's nwfilter of its security groups, "
        "define, start, autostart). Raw: the same overlay, seed, nwfilter (the default group's "
        "rules), validated define, start and autostart straight on libvirt.",
        "side", {"raw libvirt": raw_times, "API": api_times}, "API / raw", TARGETS["create"])
