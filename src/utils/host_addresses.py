"""The addresses configured on this machine's interfaces (in this process's network namespace),
read from the kernel's own tables in /proc and kept for a few seconds."""
from __future__ import annotations

import ipaddress
import re
import threading
import time
from pathlib import Path

from src.utils.special_addresses import Address, Network

FIB_TRIE = Path("/proc/net/fib_trie")  # IPv4: every local route, secondary addresses included
IF_INET6 = Path("/proc/net/if_inet6")  # IPv6: every address of every interface
KEEP_S = 5.0  # an address added to an interface is refused within this long
_LEAF = re.compile(r"^\s*\|-- (\d+\.\d+\.\d+\.\d+)\s*$")
_LOCAL = re.compile(r"^\s*/(\d+) host LOCAL\b")


def parse_fib_trie(text: str) -> set[Network]:
    """The networks of the `host LOCAL` routes (an interface's address, or all of 127.0.0.0/8
    for loopback's) in /proc/net/fib_trie."""
    found: set[Network] = set()
    leaf = None
    for line in text.splitlines():
        if match := _LEAF.match(line):
            leaf = match.group(1)
        elif (match := _LOCAL.match(line)) and leaf is not None:
            found.add(ipaddress.IPv4Network(f"{leaf}/{match.group(1)}", strict=False))
    return found


def parse_if_inet6(text: str) -> set[Network]:
    """Each address in /proc/net/if_inet6 (32 hex digits, then index, prefix, scope, flags,
    name) as a /128."""
    found: set[Network] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            found.add(ipaddress.IPv6Network((int(fields[0], 16), 128)))
    return found


class HostAddresses:
    """This machine's addresses, read again when KEEP_S has passed."""

    def __init__(self, fib_trie: Path = FIB_TRIE, if_inet6: Path = IF_INET6,
                 keep_s: float = KEEP_S) -> None:
        self._files = (fib_trie, if_inet6)
        self._keep_s = keep_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._networks: frozenset[Network] = frozenset()

    def networks(self) -> frozenset[Network]:
        """Raises: OSError when the IPv4 table cannot be read (a host without IPv6 has no
        if_inet6: no IPv6 addresses)."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._keep_s:
                fib_trie, if_inet6 = self._files
                found = parse_fib_trie(fib_trie.read_text())
                if if_inet6.exists():
                    found |= parse_if_inet6(if_inet6.read_text())
                self._networks, self._read_at = frozenset(found), time.monotonic()
            return self._networks

    def holds(self, ip: Address) -> bool:
        """Whether ip is one of this machine's addresses. Raises: OSError (see networks)."""
        return any(ip.version == network.version and ip in network
                   for network in self.networks())


THIS_MACHINE = HostAddresses()
