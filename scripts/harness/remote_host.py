"""A second, real libvirt host on this machine: libvirtd in its own netns, reached over TLS."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import libvirt  # type: ignore[import-untyped]

from scripts.harness import netns
from scripts.harness.host import IsolatedNetwork
from scripts.harness.pki import Pki, make_pki, pki_under
from scripts.harness.remote_layout import Layout, make_netns, new_layout, sweep_orphans
from scripts.harness.undo import Undo

# libvirtd answers in ~1 s here; a probe of QEMU's capabilities (when the main daemon has no
# cache to seed ours) makes its first QEMU call ~8 s slower.
READY_TIMEOUT = 30.0
# Every dir a libvirtd writes to, each replaced inside the host's mount namespace by a dir of
# its own under the host's temp root, so the two daemons share no state, socket or cache.
PRIVATE_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
                "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}
QEMU_CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
# libvirt's stock network filters (clean-traffic, ...), as the package gives every real host.
STOCK_NWFILTERS = Path("/usr/share/libvirt/nwfilter")
LIBVIRTD_CONF = """# One test host's libvirtd (scripts/harness/remote_host.py); removed with it.
listen_tls = 1
listen_tcp = {listen_tcp}
listen_addr = "{address}"
auth_tls = "none"
auth_tcp = "none"
tls_no_verify_certificate = 0
ca_file = "{pki.ca_cert}"
cert_file = "{pki.server_cert}"
key_file = "{pki.server_key}"
host_uuid = "{host_uuid}"
unix_sock_rw_perms = "0700"
"""


class RemoteHostError(netns.NamespaceError):
    """The second host could not be started; the message says which step and what to check."""


@dataclass
class RemoteHost:
    """A running second libvirt host; stop() removes all it made and may be called any time."""

    layout: Layout
    pki: Pki
    host_uuid: str
    allow_tcp: bool
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    undo: Undo = field(default_factory=Undo)
    startup_seconds: float = 0.0  # from the call to the first TLS answer
    ready_timeout: float = READY_TIMEOUT

    @property
    def address(self) -> str:
        return self.layout.address

    @property
    def netns(self) -> str:
        return self.layout.netns

    @property
    def pkipath(self) -> Path:
        """The client's PKI dir (cacert.pem, clientcert.pem, clientkey.pem)."""
        return self.pki.client_dir

    @property
    def uri(self) -> str:
        return f"qemu+tls://{self.address}/system?pkipath={self.pkipath}"

    @property
    def tcp_uri(self) -> str:
        """Plain TCP, unauthenticated: answers only when started with allow_tcp."""
        return f"qemu+tcp://{self.address}/system"

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the processes the harness started (holder, virtlogd, libvirtd)."""
        return {name: proc.pid for name, proc in self.processes.items() if proc.poll() is None}

    @property
    def pid(self) -> int:
        """The current libvirtd's PID."""
        return self.processes["libvirtd"].pid

    def host_path(self, inner: str) -> Path:
        """Where a path the host's libvirtd sees (under one of PRIVATE_DIRS) lives for us."""
        for sub, mount_point in PRIVATE_DIRS.items():
            if inner == mount_point or inner.startswith(mount_point + "/"):
                return self.layout.root / sub / inner[len(mount_point):].lstrip("/")
        raise ValueError(f"{inner} is not under the host's private dirs {list(PRIVATE_DIRS)}")

    def open(self) -> libvirt.virConnect:
        """A fresh TLS connection that has answered one call."""
        conn = libvirt.open(self.uri)
        conn.getLibVersion()
        return conn

    def kill_libvirtd(self) -> None:
        """SIGKILL the host's libvirtd, as a crash would; guests and virtlogd live on."""
        proc = self.processes["libvirtd"]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def start_libvirtd(self) -> None:
        """Start the host's libvirtd (again) and wait until it answers over TLS.

        Raises: RemoteHostError when it exits or stays silent past ready_timeout, or when
        the previous one still runs (two would fight over the same sockets and state).
        """
        previous = self.processes.get("libvirtd")
        if previous is not None and previous.poll() is None:
            raise RemoteHostError(f"libvirtd {previous.pid} of {self.netns} still runs; "
                                  "kill_libvirtd() first, or call restart_libvirtd()")
        self.processes["libvirtd"] = _spawn_in_host(
            self, "libvirtd", ["libvirtd", "--listen", "-f", "/etc/libvirt/libvirtd.conf",
                               "-p", str(self.layout.root / "libvirtd.pid")])
        _wait_until_answers(self)

    def restart_libvirtd(self) -> None:
        self.kill_libvirtd()
        self.start_libvirtd()

    def log_tail(self, name: str = "libvirtd", lines: int = 15) -> str:
        path = self.layout.root / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Kill every process in the host's netns, delete the netns, veth and temp dir.

        Idempotent; tries every step and raises RuntimeError listing the ones that failed.
        Mounts need no unmounting: they exist only in the host's mount namespace, which goes
        with its last process.
        """
        self.undo.run(f"test host {self.netns}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def host_entry(host: RemoteHost, pool: str, network: IsolatedNetwork) -> dict[str, str]:
    """The body of `POST /v1/hosts` that adds host as `remote`: its storage in pool, its
    guests on network (one of its own), TCG."""
    return {"name": "remote", "uri": host.uri, "storage": "pool", "storage_pool": pool,
            "network": network.name, "domain_type": "qemu"}


def _spawn_in_host(host: RemoteHost, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    return netns.spawn_in(host.processes["holder"].pid, argv, host.layout.root / f"{name}.log")


def _wait_until_answers(host: RemoteHost) -> None:
    deadline = time.monotonic() + host.ready_timeout
    while True:
        proc = host.processes["libvirtd"]
        if proc.poll() is not None:
            raise RemoteHostError(f"the test host's libvirtd exited ({proc.returncode}); its "
                                  f"log {host.layout.root}/libvirtd.log ends:\n{host.log_tail()}")
        try:
            host.open().close()
            return
        except libvirt.libvirtError as exc:
            if time.monotonic() > deadline:
                raise RemoteHostError(
                    f"{host.uri} did not answer within {host.ready_timeout:.0f} s ({exc}); "
                    f"libvirtd.log ends:\n{host.log_tail()}") from exc
        time.sleep(0.2)


def start_remote_host(name_prefix: str = "iaas-rh", allow_tcp: bool = False,
                      ready_timeout: float = READY_TIMEOUT) -> RemoteHost:
    """Start a second libvirt host and return it once qemu+tls answers; use it with `with`.

    Its libvirtd runs in a new netns (reached through a veth pair on a free 10.x/24) and a
    private mount namespace where PRIVATE_DIRS are dirs of its own, with its own virtlogd, a
    unique host_uuid, TLS only (plain TCP too when allow_tcp) on its veth address. Whatever
    step fails, all that was made is removed before the error is raised. Hosts whose starter
    died without stopping them are removed first (sweep_orphans).

    Raises: RemoteHostError (a HostUnavailable) saying what failed and where its logs are.
    """
    started = time.monotonic()
    sweep_orphans()
    layout = new_layout(name_prefix)
    host = RemoteHost(layout=layout, pki=pki_under(layout.root / "pki"),
                      host_uuid=str(uuid.uuid4()), allow_tcp=allow_tcp,
                      ready_timeout=ready_timeout)
    host.undo.append(("temp dir", lambda: shutil.rmtree(layout.root, ignore_errors=True)))
    with host.undo.on_failure(f"test host {host.netns}"):
        make_netns(layout, host.undo)
        make_pki(layout.root / "pki", layout.address)
        _write_config(host)
        _start_holder(host)
        _mount_private_dirs(host)
        _start_virtlogd(host)
        host.start_libvirtd()
    host.startup_seconds = time.monotonic() - started
    return host


def _write_config(host: RemoteHost) -> None:
    for sub in PRIVATE_DIRS:
        (host.layout.root / sub).mkdir()
        (host.layout.root / sub).chmod(0o755)  # as the real dirs: other users traverse them
    conf = LIBVIRTD_CONF.format(listen_tcp=int(host.allow_tcp), address=host.address,
                                pki=host.pki, host_uuid=host.host_uuid)
    (host.layout.root / "etc" / "libvirtd.conf").write_text(conf)
    _seed_qemu_capabilities(host.layout.root / "cache" / QEMU_CAPS_CACHE.relative_to(
        PRIVATE_DIRS["cache"]))
    filters = host.layout.root / "etc" / "nwfilter"
    filters.mkdir()
    for entry in STOCK_NWFILTERS.glob("*.xml") if STOCK_NWFILTERS.is_dir() else []:
        shutil.copy2(entry, filters / entry.name)


def _seed_qemu_capabilities(target: Path) -> None:
    """Copy the main daemon's QEMU capabilities cache (read only, same binaries), so the host's
    first QEMU call takes milliseconds instead of a ~8 s probe; libvirt re-probes any entry
    it finds stale (another QEMU, libvirtd or kernel), so a wrong copy costs only time."""
    target.mkdir(parents=True)
    for entry in QEMU_CAPS_CACHE.glob("*.xml") if QEMU_CAPS_CACHE.is_dir() else []:
        shutil.copy2(entry, target / entry.name)


def _start_holder(host: RemoteHost) -> None:
    host.undo.append(("processes", lambda: _kill_all(host)))
    host.processes["holder"] = netns.start_holder(host.netns, host.layout.root / "holder.log")


def _mount_private_dirs(host: RemoteHost) -> None:
    for sub, mount_point in PRIVATE_DIRS.items():
        if not Path(mount_point).is_dir():
            raise RemoteHostError(f"{mount_point} is missing: install libvirt-daemon-system "
                                  "(scripts/setup.sh)")
        netns.bind_mount(host.processes["holder"].pid, host.layout.root / sub, mount_point)


def _start_virtlogd(host: RemoteHost) -> None:
    """The host's own virtlogd: libvirtd hands guests' console logs to the one on its
    /run/libvirt/virtlogd-sock, and the root namespace's one is not visible in here."""
    host.processes["virtlogd"] = _spawn_in_host(
        host, "virtlogd", ["virtlogd", "-p", str(host.layout.root / "virtlogd.pid")])
    netns.wait_for(lambda: (host.layout.root / "run" / "virtlogd-sock").exists(), 10,
                   f"virtlogd made no socket; see {host.layout.root}/virtlogd.log")


def _kill_all(host: RemoteHost) -> None:
    """SIGKILL libvirtd first (so it starts nothing more), then every process in the netns:
    the holder, virtlogd, and what libvirtd started (qemu, dnsmasq); all of it is ours."""
    libvirtd = host.processes.get("libvirtd")
    if libvirtd is not None and libvirtd.poll() is None:
        libvirtd.send_signal(signal.SIGKILL)
    netns.kill_netns_processes(host.netns)
    for proc in host.processes.values():
        if proc.poll() is None:
            proc.kill()  # only if it never reached the netns (nsenter failed half-way)
        proc.wait(timeout=10)
