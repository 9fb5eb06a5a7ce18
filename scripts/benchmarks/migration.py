"""(i) Live migration of an idle tiny guest from qemu:///system to a second libvirtd reached over
qemu+tls: `POST /v1/vms/{vm}/migrate` against `virsh migrate --live --p2p --copy-storage-inc` of
the same kind of guest done by hand, alternated, and the guest's downtime on each side."""
from __future__ import annotations

import re
import secrets
import shutil
import statistics
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
    purge_pools_under,
)
from scripts.harness.pools import remove_pool, start_dir_pool, upload_file
from scripts.harness.remote_host import RemoteHost, host_entry
from src.config import Config
from src.hypervisor.domain_xml import DomainSpec, NicSpec, domain_name, render_domain
from src.hypervisor.nwfilter_xml import render_filter
from src.hypervisor.retarget import Retarget, retarget
from src.services.vms.provisioning import GIB
from src.utils.nocloud import Seed, write_seed

from .common import (
    TARGETS,
    Section,
    call,
    default_group_filter,
    live_app,
    median_ms,
    ms,
    percentile,
    wait_task,
)

READY = "IAAS-TINY-READY"
BOOT_S = 180.0
API_POOL, RAW_POOL = "iaas-bench-mig", "iaas-bench-mig-raw"
RAW_INSTALLATION = "bench-rawmig-" + secrets.token_hex(4)  # tags by-hand domains for cleanup
DOWNTIME = re.compile(r"Total downtime:\s+(\d+)\s+ms")


def _until(check: Callable[[], bool], what: str,
           why: Callable[[], str] = lambda: "") -> None:
    """Raises: RuntimeError when check does not hold within BOOT_S (why() says more)."""
    deadline = time.monotonic() + BOOT_S
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {BOOT_S:.0f} s; {why()}")
        time.sleep(0.2)


def _virsh(uri: str, commands: str) -> str:
    """One virsh process on one connection (commands separated by ';'). Raises: RuntimeError."""
    done = subprocess.run(["virsh", "-q", "-c", uri, commands], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"virsh {commands!r}: {done.stderr.strip()}")
    return done.stdout


class ThroughApi:
    """A VM booted on `local` through the API, moved to `remote`, deleted (only the move is
    timed)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def move(self) -> tuple[float, int | None]:
        """Seconds from the POST to the task's success, and the downtime the task shows."""
        reply = call(self.url, "POST", "/v1/vms", {
            "name": f"bench-mig-{secrets.token_hex(4)}", "cpu": 1, "ram": 128,
            "image_name": TINY_IMAGE_NAME, "host": "local"}, status=202)
        vm_id = reply.body["id"]
        wait_task(self.url, reply.body["task"]["id"])
        _until(lambda: READY in call(self.url, "GET", f"/v1/vms/{vm_id}/console?tail=80").body,
               "the API guest's boot")
        started = time.perf_counter()
        task_id = call(self.url, "POST", f"/v1/vms/{vm_id}/migrate", {"host": "remote"},
                       status=202).body["id"]
        wait_task(self.url, task_id)
        elapsed = time.perf_counter() - started
        progress = call(self.url, "GET", f"/v1/tasks/{task_id}").body["progress"] or {}
        wait_task(self.url, call(self.url, "DELETE", f"/v1/vms/{vm_id}", status=202).body["id"])
        return elapsed, progress.get("downtime_ms")


class ByHand:
    """The same kind of guest (overlay over the tiny image, seed, the API's domain template)
    started straight on libvirt, then moved as an operator would: the empty overlay made over
    the same base and the seed uploaded in the target's pool, `virsh migrate`, autostart there,
    the source's files removed (all timed)."""

    def __init__(self, conn: libvirt.virConnect, remote: RemoteHost, base: Path, workdir: Path,
                 net: IsolatedNetwork, remote_net: IsolatedNetwork) -> None:
        self.conn, self.remote, self.base, self.workdir = conn, remote, base, workdir
        self.net, self.remote_net = net, remote_net
        self.remote_conn = remote.open()
        self.pool = start_dir_pool(self.remote_conn, RAW_POOL, f"/var/lib/libvirt/{RAW_POOL}")
        self.remote_base = upload_file(self.remote_conn, self.pool, "base.qcow2", base).path()
        self.pool_dir = str(Path(self.remote_base).parent)
        self.migrate_times: list[float] = []
        self.filters: set[str] = set()  # the by-hand VMs' nwfilters, defined on both hosts

    def close(self) -> None:
        try:
            purge_domains(self.remote_conn, [], RAW_INSTALLATION)
            self._undefine_filters()
            remove_pool(self.remote_conn, RAW_POOL)
        finally:
            self.remote_conn.close()

    def _undefine_filters(self) -> None:
        for name in list(self.filters):
            for conn in (self.conn, self.remote_conn):
                try:
                    conn.nwfilterLookupByName(name).undefine()
                except libvirt.libvirtError:
                    pass  # (not defined there yet, or its domain still runs: purged first)
            self.filters.discard(name)

    def _boot(self, vm_id: str, folder: Path) -> DomainSpec:
        mac = "52:54:00:" + ":".join(secrets.token_hex(1) for _ in range(3))
        spec = DomainSpec(uuid=vm_id, name=domain_name(vm_id),
                          title=f"bench-rawmig-{secrets.token_hex(4)}", domain_type="qemu",
                          cpu=1, ram_mib=128, disk_path=str(folder / "disk.qcow2"),
                          disk_format="qcow2", nics=(NicSpec(self.net.name, mac),),
                          console_log=str(folder / "console.log"),
                          installation_id=RAW_INSTALLATION, image_name=TINY_IMAGE_NAME,
                          seed_path=str(folder / "seed.iso"),
                          nwfilter=default_group_filter(vm_id).name)
        folder.mkdir(mode=0o755)
        self.filters.add(default_group_filter(vm_id).name)
        self.conn.nwfilterDefineXML(render_filter(default_group_filter(vm_id)))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.base), "-F",
                        "qcow2", spec.disk_path, str(GIB)], check=True)
        write_seed(Seed(instance_id=vm_id, hostname=spec.title, ssh_keys=(), user_data=None,
                        mac=mac), folder / "seed.iso")
        domain = self.conn.defineXMLFlags(render_domain(spec), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        domain.create()
        domain.setAutostart(1)
        log = folder / "console.log"

        def shown() -> str:
            return log.read_text(errors="replace") if log.exists() else ""

        _until(lambda: READY in shown(), "the by-hand guest's boot",
               lambda: f"state {domain.state()}, its console log ends: {shown()[-400:]!r}")
        return spec

    def move(self) -> tuple[float, int | None]:
        """Seconds of the operator's steps, and the downtime libvirt reports on the target
        (the `virsh migrate` step's own seconds go to migrate_times)."""
        vm_id = str(uuid.uuid4())
        folder = self.workdir / vm_id
        spec = self._boot(vm_id, folder)
        where = Retarget(disks={"vda": f"{self.pool_dir}/{vm_id}.qcow2",
                                "vdb": f"{self.pool_dir}/{vm_id}-seed.iso"},
                         console_log=f"{self.pool_dir}/{vm_id}-console.log",
                         network=self.remote_net.name)
        domain = self.conn.lookupByUUIDString(vm_id)
        live = libvirt.VIR_DOMAIN_XML_MIGRATABLE
        (folder / "dest.xml").write_text(retarget(domain.XMLDesc(live), where))
        (folder / "persist.xml").write_text(retarget(
            domain.XMLDesc(live | libvirt.VIR_DOMAIN_XML_INACTIVE), where))
        seed = folder / "seed.iso"
        (folder / "filter.xml").write_text(render_filter(default_group_filter(vm_id)))
        target = self.remote.uri
        started = time.perf_counter()
        _virsh(target, f"nwfilter-define {folder / 'filter.xml'}; vol-create-as {RAW_POOL} {vm_id}.qcow2 {GIB} --format qcow2 "
                       f"--backing-vol {self.remote_base} --backing-vol-format qcow2; "
                       f"vol-create-as {RAW_POOL} {vm_id}-seed.iso {seed.stat().st_size} "
                       f"--format raw; vol-upload --pool {RAW_POOL} {vm_id}-seed.iso {seed}")
        migrating = time.perf_counter()
        _virsh(SYSTEM_URI, (
            f"migrate --live --p2p --copy-storage-inc --persistent --undefinesource "
            f"--auto-converge --migrate-disks vda --xml {folder / 'dest.xml'} "
            f"--persistent-xml {folder / 'persist.xml'} --migrateuri tcp://{self.remote.address}"
            f" {spec.name} '{target}'"))
        self.migrate_times.append(time.perf_counter() - migrating)
        _virsh(target, f"autostart {spec.name}")
        shutil.rmtree(folder)
        elapsed = time.perf_counter() - started
        found = DOWNTIME.search(_virsh(target, f"domjobinfo --completed {spec.name}"))
        purge_domains(self.remote_conn, [vm_id], RAW_INSTALLATION)
        self._undefine_filters()
        self.pool.refresh(0)
        for name in (f"{vm_id}.qcow2", f"{vm_id}-seed.iso", f"{vm_id}-console.log"):
            try:
                self.pool.storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError:
                pass  # (no console log yet)
        return elapsed, int(found.group(1)) if found else None


def _downtimes(values: list[int | None]) -> str:
    known = [value for value in values if value is not None]
    if not known:
        return "not reported"
    return f"{statistics.median(known):.0f} ms (max {max(known)} ms)"


def run(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork, remote: RemoteHost,
        remote_net: IsolatedNetwork, rounds: int) -> Section:
    """rounds moves each way, alternated, after one warm-up move each (the API's first also
    copies the base image to the target; the by-hand side uploaded its own before)."""
    config = Config(db_path=root / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                    images_dir=root / "images", instances_dir=root / "instances",
                    network=net.name, max_builds=2, host_credentials_dir=remote.pkipath)
    (root / "raw").mkdir(mode=0o755)
    times: dict[str, list[float]] = {"virsh by hand": [], "API": []}
    downtimes: dict[str, list[int | None]] = {"virsh by hand": [], "API": []}
    with live_app(config) as (app, url):
        hand = None
        try:
            call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME, "file": "tiny-linux.qcow2",
                                             "format": "qcow2"}, status=201)
            call(url, "POST", "/v1/hosts", host_entry(remote, API_POOL, remote_net),
                 status=201)
            hand = ByHand(conn, remote, config.images_dir / "tiny-linux.qcow2", root / "raw",
                          net, remote_net)
            sides = {"API": ThroughApi(url).move, "virsh by hand": hand.move}
            first = sides["API"]()[0]
            sides["virsh by hand"]()
            hand.migrate_times.clear()  # the warm-up's
            for _ in range(rounds):
                for label, move in sides.items():
                    elapsed, downtime = move()
                    times[label].append(elapsed)
                    downtimes[label].append(downtime)
        finally:
            app.runner.shutdown()  # no task may define a domain after the purge
            purge_domains(conn, [], app.installation_id)
            purge_domains(conn, [], RAW_INSTALLATION)
            purge_pools_under(conn, root)  # the volumes pool the app made here
            if hand is not None:
                hand.close()
            remote_conn = remote.open()
            try:
                purge_domains(remote_conn, [], app.installation_id)
                remove_pool(remote_conn, API_POOL)
            finally:
                remote_conn.close()
        migrate_only = hand.migrate_times if hand else []
    return _section(times, downtimes, migrate_only, rounds, first)


def _section(times: dict[str, list[float]], downtimes: dict[str, list[int | None]],
             migrate_only: list[float], rounds: int, first: float) -> Section:
    section = Section(
        title="Live migration: API against virsh by hand",
        method=(f"An idle tiny guest (1 vCPU, 128 MiB, TCG, booted to its prompt) on "
                f"`{SYSTEM_URI}` moved live to a second libvirtd in its own network namespace "
                "reached with `qemu+tls://` (storage `pool`, not shared: the overlay is copied, "
                f"the base image is there already); {rounds} rounds alternating the sides after "
                "one warm-up move each. API: `POST /v1/vms/{vm}/migrate` until its task "
                "succeeded (files made ready on the target through libvirt's storage API, "
                "peer-to-peer migration, rows committed, the source cleaned). By hand: "
                "`virsh vol-create-as` of the empty overlay over the same base and upload of "
                "the seed in the target's pool, `virsh migrate --live --p2p --copy-storage-inc "
                "--persistent --undefinesource --auto-converge --migrate-disks vda --xml ... "
                "--persistent-xml ... --migrateuri tcp://...`, `virsh autostart` there, the "
                "source's files removed. Downtime: libvirt's job statistics of the completed "
                "migration on the target (`downtime`; the API's task shows it as "
                "`progress.downtime_ms`, `virsh domjobinfo --completed` for the other side)."),
        header=["side", "median", "p95", "guest downtime (median)"])
    for label in ("virsh by hand", "API"):
        section.rows.append([label, median_ms(times[label]), ms(percentile(times[label], 95)),
                             _downtimes(downtimes[label])])
    section.rows.append(["(its `virsh migrate` step alone)", median_ms(migrate_only),
                         ms(percentile(migrate_only, 95)), "-"])
    api = statistics.median(times["API"])
    ratio = api / statistics.median(times["virsh by hand"])
    section.judge(TARGETS["migration"], ratio, f"{ratio:.3f}")
    section.notes.append(f"ratio API / virsh by hand (medians): **{ratio:.3f}**; API / the "
                         f"`virsh migrate` step alone: {api / statistics.median(migrate_only):.3f}"
                         " (that step alone leaves the target without the files it needs and "
                         "the source with its own; every virsh call also pays its own process "
                         "and TLS connection, as an operator's would)")
    pairs = ", ".join(f"{api_s:.2f}/{hand_s:.2f}" for api_s, hand_s in
                      zip(times["API"], times["virsh by hand"], strict=True))
    section.notes.append(f"each round, API/by hand in s: {pairs}")
    section.notes.append(f"The first move through the API, which also copied the base image "
                         f"into the target's pool and checked its SHA-256: {ms(first)}.")
    return section
