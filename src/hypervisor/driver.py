"""Hypervisor: everything the services ask of one libvirt host, over one connection."""
from __future__ import annotations

from collections.abc import Callable

from src.hypervisor.connection import Connection, LifecycleListener
from src.hypervisor.domains import Domains
from src.hypervisor.host import HostFacts
from src.hypervisor.mdevs import Mdevs, NodeDeviceMdevs
from src.hypervisor.migration import Migrations
from src.hypervisor.networks import Networks
from src.hypervisor.nwfilters import Filters
from src.hypervisor.storage import Pools


class Hypervisor(Domains):
    """Domain operations (inherited), host facts (`host`), networks (`networks`), storage
    (`pools`), migrations (`migrations`), network filters (`filters`) and the connection's life."""

    def __init__(self, uri: str) -> None:
        super().__init__(Connection(uri))
        self.uri = uri
        self.host = HostFacts(self.connection)
        self.networks = Networks(self.connection)
        self.pools = Pools(self.connection)
        self.mdevs: Mdevs = NodeDeviceMdevs(self.connection)  # GPU partitions
        self.migrations = Migrations(self.connection)
        self.filters = Filters(self.connection)  # nwfilters: security groups

    @property
    def calls(self) -> int:
        """libvirt API calls made so far (benchmarks and tests count them)."""
        return self.connection.calls

    @property
    def thread_calls(self) -> int:
        """libvirt API calls the calling thread made so far (see Connection.thread_calls)."""
        return self.connection.thread_calls

    @property
    def connected(self) -> bool:
        return self.connection.connected

    def ping(self) -> None:
        """Raises: HypervisorError when libvirt does not answer."""
        self.version()

    def version(self) -> str:
        """libvirt's version on the host, e.g. 9.0.0. Raises: HypervisorError."""
        number = int(self.connection.call(lambda c: c.getLibVersion()))
        return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"

    def watch(self, listener: LifecycleListener, on_connect: Callable[[], None]) -> None:
        """See Connection.watch."""
        self.connection.watch(listener, on_connect)

    def close(self) -> None:
        self.connection.close()
