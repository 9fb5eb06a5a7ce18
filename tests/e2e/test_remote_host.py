"""E2E: the second libvirt host of the multi-host tier, over qemu+tls, through libvirt alone."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import (
    IsolatedNetwork,
    force_off,
    remove_network,
    require_tiny_image,
    start_isolated_network,
)
from scripts.harness.netns import pids_in_netns, running
from scripts.harness.pki import make_pki
from scripts.harness.pools import (
    create_overlay,
    download,
    remove_pool,
    start_dir_pool,
    upload_file,
)
from scripts.harness.remote_host import RemoteHost, RemoteHostError, start_remote_host
from scripts.harness.remote_layout import sweep_orphans

READY_MARK = b"IAAS-TINY-READY"  # the tiny guest prints it on its serial console once booted
BOOT_TIMEOUT = 120.0
GUEST_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='{pool}' volume='{volume}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='{network}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='{console_log}' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
"""
Timings = dict[str, float]
T = TypeVar("T")


def _host_uuid(conn: libvirt.virConnect) -> str | None:
    return ET.fromstring(conn.getCapabilities()).findtext("./host/uuid")


def test_tls_reaches_a_host_of_its_own(remote_host: RemoteHost, remote_conn: libvirt.virConnect,
                                       system_conn: libvirt.virConnect) -> None:
    arch, memory_mib, cpus, *_ = remote_conn.getInfo()
    assert (arch, memory_mib > 0, cpus > 0) == ("x86_64", True, True)
    assert _host_uuid(remote_conn) == remote_host.host_uuid != _host_uuid(system_conn)
    main_domains = {domain.UUIDString() for domain in system_conn.listAllDomains()}
    assert not main_domains & {domain.UUIDString() for domain in remote_conn.listAllDomains()}
    assert "default" not in [net.name() for net in remote_conn.listAllNetworks()]


def test_plain_tcp_is_refused(remote_host: RemoteHost) -> None:
    with pytest.raises(libvirt.libvirtError, match="unable to connect"):
        libvirt.open(remote_host.tcp_uri)


def _leftovers(prefix: str) -> list[str]:
    """Netns, temp dirs and veth ends a host started with prefix may have left behind."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout.split()
    return ([name for name in netns if name.startswith(prefix)]
            + [str(path) for path in Path(tempfile.gettempdir()).glob(f"{prefix}-*")])


def _veths() -> set[str]:
    return {path.name for path in Path("/sys/class/net").glob("rh*h")}


def _peer_netns(veth: str) -> str | None:
    """The netns holding veth's other end (None when the link is gone or has no named one)."""
    shown = subprocess.run(["ip", "-o", "link", "show", "dev", veth], capture_output=True,
                           text=True, check=False).stdout.split()
    return shown[shown.index("link-netns") + 1] if "link-netns" in shown else None


def test_a_host_with_tcp_answers_it_and_stop_leaves_nothing() -> None:
    prefix = f"iaas-e2e-rhtcp{secrets.token_hex(2)}"
    host = start_remote_host(prefix, allow_tcp=True)
    try:
        libvirt.open(host.tcp_uri).close()
        pids = list(host.pids.values())
        assert _leftovers(prefix) and host.layout.veth_host in _veths()
    finally:
        host.stop()
    host.stop()  # a second stop (a fixture after a test's own) is harmless
    assert _leftovers(prefix) == []
    assert host.layout.veth_host not in _veths()
    assert [pid for pid in pids if running(pid)] == []


def test_a_start_that_fails_halfway_leaves_nothing() -> None:
    prefix = f"iaas-e2e-rhfail{secrets.token_hex(2)}"
    veths = _veths()
    with pytest.raises(RemoteHostError, match="did not answer within 0 s"):
        start_remote_host(prefix, ready_timeout=0)
    assert _leftovers(prefix) == []
    # Veths that appeared meanwhile are other hosts' (another run's, on this machine).
    appeared = {veth: _peer_netns(veth) for veth in _veths() - veths}
    assert not [veth for veth, peer in appeared.items() if peer and peer.startswith(prefix)]


ORPHAN_MAKER = """
import os, signal
from scripts.harness.remote_host import start_remote_host
host = start_remote_host({prefix!r})
print(host.netns, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as a test run killed outright: stop() never runs
"""


def test_sweep_removes_a_host_whose_starter_was_killed() -> None:
    prefix = f"iaas-e2e-rhorphan{secrets.token_hex(2)}"
    maker = subprocess.run([sys.executable, "-c", ORPHAN_MAKER.format(prefix=prefix)],
                           cwd=Path(__file__).resolve().parents[2], capture_output=True,
                           text=True, check=False)
    name = maker.stdout.strip()
    assert name.startswith(prefix), maker.stderr
    orphans = pids_in_netns(name)
    assert len(orphans) >= 3  # holder, virtlogd, libvirtd live on
    assert sweep_orphans(prefix) == [name]
    assert _leftovers(prefix) == []
    assert [pid for pid in orphans if running(pid)] == []


def _trust_the_host_too(remote_host: RemoteHost, pkipath: Path) -> None:
    """Add the host's CA to pkipath's own: libvirt's client checks its own certificate against
    cacert.pem before it connects, so only a client trusting both gets as far as the server."""
    with (pkipath / "cacert.pem").open("ab") as trusted:
        trusted.write((remote_host.pkipath / "cacert.pem").read_bytes())


@pytest.mark.parametrize(("trust_host_ca", "refusal"), [
    (True, "Unable to read TLS confirmation"),  # the server refuses a client of another CA
    (False, "Failed to verify peer"),  # the client refuses a server its CA did not sign
])
def test_tls_checks_certificates_both_ways(remote_host: RemoteHost, tmp_path: Path,
                                           trust_host_ca: bool, refusal: str) -> None:
    stranger = make_pki(tmp_path, remote_host.address).client_dir
    if trust_host_ca:
        _trust_the_host_too(remote_host, stranger)
    with pytest.raises(libvirt.libvirtError, match=refusal):
        libvirt.open(f"qemu+tls://{remote_host.address}/system?pkipath={stranger}")


def _timed(timings: Timings, label: str, step: Callable[[], T]) -> T:
    started = time.monotonic()
    result = step()
    timings[label] = time.monotonic() - started
    return result


def _xml_text(xml: str, path: str, attribute: str | None = None) -> str | None:
    element = ET.fromstring(xml).find(path)
    if element is None:
        return None
    return element.get(attribute) if attribute else element.text


@dataclass(frozen=True)
class Guest:
    """One test's guest on the remote host, with a pool and a network of its own (the session
    host may hold other tests' `iaas` pool)."""

    name: str
    network: IsolatedNetwork

    @property
    def pool_path(self) -> str:
        return f"/var/lib/libvirt/{self.name}"

    @property
    def console_log(self) -> str:
        return f"{self.pool_path}/console-{self.name}.log"


def _upload_base(conn: libvirt.virConnect, pool: libvirt.virStoragePool,
                 timings: Timings) -> libvirt.virStorageVol:
    image = require_tiny_image()
    base = _timed(timings, "upload base image", lambda: upload_file(conn, pool, image.name,
                                                                    image))
    assert _xml_text(base.XMLDesc(0), "./target/format", "type") == "qcow2"
    # The virtual size libvirt probed from what was sent is the file's own.
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     check=True, capture_output=True, text=True).stdout)
    assert base.info()[1] == info["virtual-size"]
    return base


def _make_overlay(remote_host: RemoteHost, pool: libvirt.virStoragePool,
                  base: libvirt.virStorageVol, guest: Guest, timings: Timings) -> str:
    overlay = _timed(timings, "create overlay",
                     lambda: create_overlay(pool, f"{guest.name}.qcow2", base))
    xml = overlay.XMLDesc(0)
    assert _xml_text(xml, "./backingStore/path") == base.path()
    assert _xml_text(xml, "./backingStore/format", "type") == "qcow2"
    assert remote_host.host_path(overlay.path()).stat().st_size < 1 << 20  # no full copy
    volume: str = overlay.name()
    return volume


def _console_log(conn: libvirt.virConnect, guest: Guest) -> bytes:
    """The guest's serial log as the API will read it: refresh the pool, download the volume."""
    pool = conn.storagePoolLookupByName(guest.name)
    pool.refresh(0)
    return download(conn, pool.storageVolLookupByName(Path(guest.console_log).name))


def _wait_for_console(conn: libvirt.virConnect, guest: Guest) -> bytes:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while READY_MARK not in (log := _console_log(conn, guest)):
        assert time.monotonic() < deadline, f"no {READY_MARK!r} on the console: {log[-500:]!r}"
        time.sleep(1)
    return log


def _define_and_start(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    domain = conn.defineXML(xml)
    domain.create()
    return domain


def _remove_guest(conn: libvirt.virConnect, guest: Guest) -> None:
    for domain in conn.listAllDomains():
        if domain.name() == guest.name:
            force_off(domain)  # the guest may have stopped since the test looked
            domain.undefine()
    remove_network(conn, guest.network)
    remove_pool(conn, guest.name)
    assert guest.name not in [domain.name() for domain in conn.listAllDomains()]
    assert guest.name not in [pool.name() for pool in conn.listAllStoragePools()]
    assert guest.network.name not in [net.name() for net in conn.listAllNetworks()]


@pytest.fixture
def guest(remote_host: RemoteHost) -> Iterator[Guest]:
    """A guest name and an isolated network on the remote host; at teardown the guest, its
    network and its pool go, through a fresh connection (the test restarts libvirtd)."""
    conn = remote_host.open()
    try:
        network = start_isolated_network(conn, "iaas-e2e-rh")
    finally:
        conn.close()
    guest = Guest(name=f"iaas-e2e-rh-{secrets.token_hex(3)}", network=network)
    yield guest
    conn = remote_host.open()
    try:
        _remove_guest(conn, guest)
    finally:
        conn.close()


def test_guest_boots_on_the_remote_host_and_outlives_its_daemon(remote_host: RemoteHost,
                                                                guest: Guest) -> None:
    timings: Timings = {"start host": remote_host.startup_seconds}
    conn = _timed(timings, "connect over TLS", remote_host.open)
    pool = start_dir_pool(conn, guest.name, guest.pool_path)
    base = _upload_base(conn, pool, timings)
    volume = _make_overlay(remote_host, pool, base, guest, timings)
    xml = GUEST_XML.format(name=guest.name, pool=guest.name, volume=volume,
                           network=guest.network.name, console_log=guest.console_log)
    domain = _timed(timings, "define and start guest", lambda: _define_and_start(conn, xml))
    assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    _timed(timings, "boot to console mark", lambda: _wait_for_console(conn, guest))

    remote_host.kill_libvirtd()
    with pytest.raises(libvirt.libvirtError):
        conn.getLibVersion()
    _timed(timings, "restart libvirtd", remote_host.start_libvirtd)
    conn = remote_host.open()
    try:
        assert conn.lookupByName(guest.name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert READY_MARK in _console_log(conn, guest)
    finally:
        conn.close()
    print("remote host timings (s): "
          + ", ".join(f"{label} {seconds:.2f}" for label, seconds in timings.items()))
