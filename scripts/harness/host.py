"""Host helpers for the e2e tier and the benchmarks: isolated network, workspaces, purging."""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.domain_xml import METADATA_NS
from src.hypervisor.domains import destroy_if_running
from src.hypervisor.nwfilter_xml import filter_name

SYSTEM_URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[2]
TINY_IMAGE = REPO / "images" / "tiny-linux.qcow2"
TINY_IMAGE_NAME = "tiny-linux"
# Under libvirt's own images dir, so qemu (user libvirt-qemu, AppArmor/SELinux) may open files.
LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")

NETWORK_XML = """<network>
  <name>{name}</name>
  <bridge name='{bridge}' stp='off' delay='0'/>
  <dns enable='no'/>
  <ip address='{gateway}' netmask='255.255.255.0'>
    <dhcp><range start='{first}' end='{last}'/></dhcp>
  </ip>
</network>
"""


class HostUnavailable(RuntimeError):
    """libvirtd does not answer, or the tiny guest image was never built."""


def open_system(uri: str = SYSTEM_URI) -> libvirt.virConnect:
    """A connection to libvirtd that has answered one call.

    Raises: HostUnavailable with a message saying what to do.
    """
    try:
        conn = libvirt.open(uri)
        conn.getLibVersion()
    except libvirt.libvirtError as exc:
        raise HostUnavailable(f"libvirtd does not answer on {uri} ({exc}); start it with "
                              "scripts/setup.sh (or `virtlogd -d; libvirtd -d` as root)") from exc
    return conn


def require_tiny_image() -> Path:
    """Raises: HostUnavailable when images/tiny-linux.qcow2 has not been built."""
    if not TINY_IMAGE.is_file():
        raise HostUnavailable(f"{TINY_IMAGE} is missing; build it with "
                              "`scripts/build_tiny_image.sh images/tiny-linux.qcow2`")
    return TINY_IMAGE


@dataclass(frozen=True)
class IsolatedNetwork:
    """A libvirt network without <forward>: guests reach each other and the host bridge only."""

    name: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)


def _subnets_in_use() -> list[ipaddress.IPv4Network]:
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=True).stdout
    used = []
    for line in routes.splitlines():
        first = line.split()[0] if line.strip() else "default"
        if first != "default":
            used.append(ipaddress.IPv4Network(first, strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _subnets_in_use()
    for _ in range(100):
        candidate = ipaddress.IPv4Network(f"10.{200 + secrets.randbelow(50)}."
                                          f"{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise HostUnavailable("no free 10.x/24 subnet found for the isolated test network")


def free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x/24 that no route of this machine's root namespace uses right now.

    Raises: HostUnavailable after 100 unlucky draws.
    """
    return _free_subnet()


def start_isolated_network(conn: libvirt.virConnect, prefix: str) -> IsolatedNetwork:
    """Define and start a fresh isolated network named <prefix>-<random>; nothing forwards out."""
    tag = secrets.token_hex(3)
    net = IsolatedNetwork(name=f"{prefix}-{tag}", bridge=f"vbr-e2e-{tag}", subnet=_free_subnet())
    hosts = list(net.subnet.hosts())
    xml = NETWORK_XML.format(name=net.name, bridge=net.bridge, gateway=net.gateway,
                             first=hosts[9], last=hosts[199])
    handle = conn.networkDefineXML(xml)
    try:
        handle.create()
    except libvirt.libvirtError:
        handle.undefine()
        raise
    return net


def remove_network(conn: libvirt.virConnect, net: IsolatedNetwork) -> None:
    """Destroy and undefine the network we made; a network already gone is fine."""
    try:
        handle = conn.networkLookupByName(net.name)
    except libvirt.libvirtError:
        return
    if handle.isActive():
        handle.destroy()
    handle.undefine()


def make_workspace(prefix: str, under: Path = LIBVIRT_IMAGES) -> Path:
    """A fresh dir under libvirt's images dir with images/ (holding the tiny image) and instances/.

    A host of scripts/harness/remote_host.py has a /var/lib/libvirt of its own: a workspace
    both it and we see at one path lies outside it (under=/tmp, which its QEMU may open where
    no AppArmor/SELinux profile confines QEMU to libvirt's dirs, as on this project's hosts).

    Raises: HostUnavailable when the tiny image is missing.
    """
    source = require_tiny_image()
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=under))
    os.chmod(root, 0o755)  # mkdtemp makes 0700; qemu runs as another user
    for sub in ("images", "instances"):
        (root / sub).mkdir(mode=0o755)
    # A copy, not a hard link: libvirt's dynamic ownership chowns the base while a guest runs.
    shutil.copyfile(source, root / "images" / source.name)
    return root


def installation_of(domain: libvirt.virDomain) -> str | None:
    """The iaas installation id in a domain's metadata, or None for a domain without ours."""
    try:
        metadata = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError:
        return None
    for element in ET.fromstring(metadata).iter():
        if element.tag.rpartition("}")[2] == "installation":
            return element.text
    return None


def force_off(domain: libvirt.virDomain) -> None:
    """Destroy the domain; one that is off already is fine, one still running is not.

    libvirt's destroy kills QEMU, then waits for the domain's job: when another thread of
    libvirtd (its reconnect after a restart, the monitor's EOF) stopped the domain meanwhile,
    destroy reports "domain is not running" though the domain is off as asked. So that error
    passes only when the domain is indeed off; any other, or a domain still active, raises.
    """
    destroy_if_running(domain)


def purge_filters(conn: libvirt.virConnect, uuids: Iterable[str | None]) -> None:
    """Undefine the nwfilters (security groups) of the VMs with these uuids; gone ones are fine.
    Call it after their domains are gone: libvirt keeps a filter a NIC uses."""
    for uuid in uuids:
        if not uuid:
            continue  # an image's task has no VM
        try:
            conn.nwfilterLookupByName(filter_name(uuid)).undefine()
        except libvirt.libvirtError:
            pass  # removed with its VM, or never made


def purge_domains(conn: libvirt.virConnect, uuids: Iterable[str],
                  installation_id: str) -> list[str]:
    """Force off and undefine every domain with one of uuids or tagged with installation_id,
    and its nwfilter.

    Raises: RuntimeError listing the domains that could not be removed (after trying all).
    """
    wanted = set(uuids)
    removed, failures = [], []
    for domain in conn.listAllDomains():
        if domain.UUIDString() not in wanted and installation_of(domain) != installation_id:
            continue
        try:
            force_off(domain)
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            removed.append(domain.name())
            purge_filters(conn, [domain.UUIDString()])
        except libvirt.libvirtError as exc:
            failures.append(f"{domain.UUIDString()}: {exc}")
    if failures:
        raise RuntimeError(f"could not remove test domains: {failures}")
    return removed


def purge_pools_under(conn: libvirt.virConnect, root: Path) -> list[str]:
    """Stop and undefine every storage pool whose directory lies under root (a test's
    workspace): those a server or worker process of the test made, whatever its installation."""
    removed = []
    for pool in conn.listAllStoragePools():
        target = ET.fromstring(pool.XMLDesc()).findtext("target/path") or ""
        if not Path(target).is_relative_to(root):
            continue
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        removed.append(pool.name())
    return removed


def purge_pools(conn: libvirt.virConnect, installation_id: str) -> list[str]:
    """Stop and undefine the storage pools an installation made (named *-<its id's prefix>);
    their files are the test's workspace, removed with it."""
    removed = []
    for pool in conn.listAllStoragePools():
        if not pool.name().endswith(f"-{installation_id[:8]}"):
            continue
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        removed.append(pool.name())
    return removed


def domain_exists(conn: libvirt.virConnect, uuid: str) -> bool:
    try:
        conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True
