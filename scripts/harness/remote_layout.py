"""Names, addresses and temp dirs of remote test hosts; the sweep of those a killed run left."""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scripts.harness import netns
from scripts.harness.host import free_subnet
from scripts.harness.undo import Undo

OWNER_FILE = "owner.pid"  # in the temp root: the PID of the process that started the host


@dataclass(frozen=True)
class Layout:
    """Names and addresses of one host, all unique to it."""

    tag: str
    netns: str
    veth_host: str  # the end in the root namespace
    veth_ns: str  # the end inside the host's namespace
    subnet: ipaddress.IPv4Network
    root: Path  # temp dir: private dirs, PKI, logs, pid files

    @property
    def address(self) -> str:
        """Where the host's libvirtd listens (inside the netns)."""
        return str(self.subnet.network_address + 2)

    @property
    def host_side_address(self) -> str:
        return str(self.subnet.network_address + 1)


def new_layout(name_prefix: str) -> Layout:
    """Fresh unique names, a free subnet and a temp dir (0700) recording who started it."""
    tag, subnet = secrets.token_hex(3), free_subnet()
    # 0700 (mkdtemp's mode): only root passes; qemu (libvirt-qemu) and dnsmasq (nobody) reach
    # the dirs under it through their mount points inside the host's namespace.
    root = Path(tempfile.mkdtemp(prefix=f"{name_prefix}-{tag}-"))
    (root / OWNER_FILE).write_text(str(os.getpid()))  # before the netns: see sweep_orphans
    return Layout(tag=tag, netns=f"{name_prefix}-{tag}", veth_host=_veth_outside(tag),
                  veth_ns=f"rh{tag}n", subnet=subnet, root=root)


def make_netns(lay: Layout, undo: Undo) -> None:
    """The layout's netns and veth pair, addressed and up; their removal goes on undo first."""
    netns.run("ip", "netns", "add", lay.netns)
    undo.append(("netns", lambda: netns.delete_netns(lay.netns)))
    undo.append(("veth", lambda: netns.delete_link(lay.veth_host)))
    size = lay.subnet.prefixlen
    netns.add_veth(lay.netns, lay.veth_host, lay.veth_ns,
                   ipaddress.IPv4Interface(f"{lay.host_side_address}/{size}"),
                   ipaddress.IPv4Interface(f"{lay.address}/{size}"))


def _veth_outside(tag: str) -> str:
    return f"rh{tag}h"  # interface names are at most 15 bytes: rh<6 hex><side>


def sweep_orphans(name_prefix: str = "") -> list[str]:
    """Remove the hosts this harness started (of names starting with name_prefix) whose
    starting process is gone: a run killed outright never reaches stop(), and its libvirtd
    and guests would run on.

    A host is ours when its netns <name>-<6 hex> has a temp dir <name>-<8 chars> holding
    OWNER_FILE; one whose starter lives (another run) is left alone. Returns the netns removed.
    """
    removed = []
    for name in netns.netns_names():
        match = re.fullmatch(r".+-([0-9a-f]{6})", name)
        if match is None or not name.startswith(name_prefix):
            continue
        roots = [root for root in Path(tempfile.gettempdir()).glob(f"{name}-*")
                 if re.fullmatch(re.escape(name) + r"-[a-z0-9_]{8}", root.name)
                 and (root / OWNER_FILE).is_file()]
        if not roots or any(_owner_alive(root) for root in roots):
            continue
        netns.kill_netns_processes(name)
        netns.delete_link(_veth_outside(match[1]))
        netns.delete_netns(name)
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
        removed.append(name)
    return removed


def _owner_alive(root: Path) -> bool:
    try:
        return netns.running(int((root / OWNER_FILE).read_text()))
    except (OSError, ValueError):
        return False
