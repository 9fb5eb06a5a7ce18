"""Namespaces for a test host: a netns with a veth pair, a mount namespace kept by a holder."""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from scripts.harness.host import HostUnavailable

NETNS_DIR = Path("/run/netns")


class NamespaceError(HostUnavailable):
    """A namespace step failed; the message names the command and what it said."""


def run(*args: str) -> str:
    """Run a command; its stdout, or NamespaceError with its stderr."""
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NamespaceError(f"`{' '.join(args)}` failed ({result.returncode}): "
                             f"{result.stderr.strip()}; are you root with iproute2 installed?")
    return result.stdout


def wait_for(ready: Callable[[], bool], seconds: float, failure: str) -> None:
    """Poll ready() until true; NamespaceError(failure) after seconds."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise NamespaceError(failure)
        time.sleep(0.05)


def netns_names() -> list[str]:
    return sorted(path.name for path in NETNS_DIR.glob("*")) if NETNS_DIR.is_dir() else []


def add_veth(netns: str, outside: str, inside: str, outside_ip: ipaddress.IPv4Interface,
             inside_ip: ipaddress.IPv4Interface) -> None:
    """A veth pair from the root namespace (outside) into netns (inside), both up, and lo up."""
    run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", netns)
    run("ip", "addr", "add", str(outside_ip), "dev", outside)
    run("ip", "link", "set", outside, "up")
    run("ip", "-n", netns, "addr", "add", str(inside_ip), "dev", inside)
    run("ip", "-n", netns, "link", "set", inside, "up")
    run("ip", "-n", netns, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    """Delete a netns; one already gone is fine."""
    if (NETNS_DIR / name).exists():
        run("ip", "netns", "delete", name)


def delete_link(name: str) -> None:
    """Delete a link of the root namespace (a veth takes its peer along); gone is fine."""
    if Path("/sys/class/net", name).exists():
        run("ip", "link", "delete", name)


def start_holder(netns: str, log: Path) -> subprocess.Popen[bytes]:
    """A sleeping process in netns that owns a new mount namespace, where bind_mount puts a
    host's private dirs and spawn_in starts its daemons (which may die and start again there),
    and a UTS namespace of its own: the host has a hostname of its own (the netns's name), as
    two hosts between which libvirt migrates VMs must.

    `ip netns exec` gives it the netns's own /sys; `unshare --propagation slave` lets our
    unmounts in (so another host's /run/netns entry, deleted later, is not pinned alive by a
    copy here) and keeps its mounts out of our namespace.
    """
    # Output to log, never inherited: a holder outliving a killed starter must not keep its pipe.
    with log.open("ab") as out:
        holder = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "--mount", "--uts",
                                   "--propagation", "slave", "--", "sleep", "infinity"],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    wait_for(lambda: _comm(holder.pid) == "sleep", 5,
             f"the holder of netns {netns} (ip netns exec, unshare --mount) never started; "
             f"see {log}")
    run("nsenter", f"--target={holder.pid}", "--uts", "--", "hostname", netns)
    return holder


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def bind_mount(holder: int, source: Path, target: str) -> None:
    """Mount source over target in the holder's mount namespace only."""
    run("nsenter", f"--target={holder}", "--mount", "--", "mount", "--bind", str(source), target)


def spawn_in(holder: int, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """argv in the holder's net and mount namespaces, output appended to log. nsenter execs
    argv (it forks only to enter a PID namespace), so the returned PID is argv's own."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(["nsenter", f"--target={holder}", "--mount", "--net", "--uts",
                                 "--", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def running(pid: int) -> bool:
    """Whether pid runs; a zombie its new parent has yet to reap is dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pids_in_netns(netns: str) -> list[int]:
    if not (NETNS_DIR / netns).exists():
        return []
    return [int(pid) for pid in run("ip", "netns", "pids", netns).split()]


def kill_netns_processes(netns: str, seconds: float = 10) -> None:
    """SIGKILL every process in netns until none is left (children may appear meanwhile).

    Raises: NamespaceError naming the survivors after seconds.
    """
    deadline = time.monotonic() + seconds
    while pids := pids_in_netns(netns):
        if time.monotonic() > deadline:
            raise NamespaceError(f"processes {pids} in netns {netns} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
